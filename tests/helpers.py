"""Helpers imported by several test files (fixtures and settings live in conftest.py)."""

import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
MNIST_10K = os.path.join(SHARED_DATA, "mnist-10k")

needs_mnist = pytest.mark.skipif(not os.path.isdir(MNIST_10K), reason="../shared/data/mnist-10k not present")


def pack_rows(rows):
    """Packs a list of 0/1 lists into codes."""
    from tfhash import codes

    return codes.pack(np.array(rows, dtype=np.uint8))


def scheme_labels(scheme_cls, n):
    """Training labels for a scheme that trains on them (4 classes, every third item unlabelled), else None."""
    if not scheme_cls.needs_labels:
        return None
    index = np.arange(n)
    return np.where(index % 3 == 2, -1, index % 4)
