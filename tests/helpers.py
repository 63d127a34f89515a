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


def assert_xla_trains_like_plain(plain, xla, x, bits):
    """Two fits of the same settings, without and with XLA: the same losses each epoch and (nearly) the same codes."""
    from tfhash import codes

    for key, value in plain.history.history.items():
        if not key.startswith("bit_freq"):  # counts of thresholded outputs: compared through the codes below
            np.testing.assert_allclose(xla.history.history[key], value, rtol=1e-4, atol=1e-6, err_msg=key)
    agree = codes.unpack(plain.encode(x), bits) == codes.unpack(xla.encode(x), bits)
    assert agree.mean() >= 0.99


def counting_backbone(shape=(8, 8, 3), features=16):
    """A user backbone (a functional keras.Model: flatten, dense) and the non-trainable variable counting the
    items it has run on."""
    import keras
    import tensorflow as tf

    class Counting(keras.layers.Layer):
        def build(self, input_shape):
            self.items = self.add_weight(shape=(), initializer="zeros", trainable=False, name="items")

        def call(self, x):
            self.items.assign_add(tf.cast(tf.shape(x)[0], tf.float32))
            return x

    inputs = keras.Input(shape)
    counter = Counting(name="counter")
    outputs = keras.layers.Dense(features, activation="relu")(keras.layers.Flatten()(counter(inputs)))
    return keras.Model(inputs, outputs, name="counting"), counter.items
