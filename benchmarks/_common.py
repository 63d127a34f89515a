"""Helpers shared by the benchmark scripts (not part of the library)."""

import os
import platform

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


def load_mnist10k():
    """The real MNIST test split from ../shared/data/mnist-10k: float32 images in [0, 1], labels."""
    from tfhash import datasets

    folder = os.path.join(SHARED_DATA, "mnist-10k")
    if not os.path.isdir(folder):
        raise SystemExit(f"benchmark data not found: {folder} (expected beside the project root)")
    return datasets.load_mnist_idx(os.path.join(folder, "t10k-images-idx3-ubyte.gz"),
                                   os.path.join(folder, "t10k-labels-idx1-ubyte.gz"))


def machine():
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__}


def peak_rss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
