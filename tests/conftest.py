import os

import numpy as np
import pytest
from hypothesis import settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def mixed_precision():
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")  # what GPU users turn on
    yield
    keras.mixed_precision.set_global_policy("float32")


# Property-based tests: a fixed, derandomised budget in CI (the same examples every run, bounded time);
# locally each run explores new examples.
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("dev", max_examples=40, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))
