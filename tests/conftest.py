import os

import numpy as np
import pytest
from hypothesis import settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
MNIST_10K = os.path.join(SHARED_DATA, "mnist-10k")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pack_rows(rows):
    """Packs a list of 0/1 lists into codes (test helper)."""
    from tfhash import codes

    return codes.pack(np.array(rows, dtype=np.uint8))


needs_mnist = pytest.mark.skipif(not os.path.isdir(MNIST_10K), reason="../shared/data/mnist-10k not present")


def scheme_labels(scheme_cls, n):
    """Training labels for a scheme that trains on them (4 classes, every third item unlabelled), else None."""
    if not scheme_cls.needs_labels:
        return None
    index = np.arange(n)
    return np.where(index % 3 == 2, -1, index % 4)


# Property-based tests: a fixed, derandomised budget in CI (the same examples every run, bounded time);
# locally each run explores new examples.
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("dev", max_examples=40, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))
