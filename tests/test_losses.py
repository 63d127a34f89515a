"""Known-answer tests for the HashGAN loss terms (tfhash.losses); arithmetic in the comments."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfhash import losses


def test_bit_entropy():
    # t = 0.5: each bit has entropy ln 2; two bits -> 2 ln 2 = 1.386294.
    # t = (0.9, 0.1): each bit -(0.9 ln 0.9 + 0.1 ln 0.1) = 0.325083; two bits -> 0.650166.
    t = tf.constant([[0.5, 0.5], [0.9, 0.1]])
    np.testing.assert_allclose(losses.bit_entropy(t).numpy(), [2 * math.log(2), 0.6501659467], rtol=1e-6)
    # Saturated outputs are clipped, not NaN: entropy ~ 0.
    assert np.all(np.isfinite(losses.bit_entropy(tf.constant([[0.0, 1.0]])).numpy()))


def test_negative_frequency_entropy():
    # f = (0.5, 0.5): 2 * (0.5 ln 0.5 + 0.5 ln 0.5) = -2 ln 2 = -1.386294 (the minimum).
    # f = (0.9, 0.5): (0.9 ln 0.9 + 0.1 ln 0.1) + (-ln 2) = -0.325083 - 0.693147 = -1.018230.
    np.testing.assert_allclose(losses.negative_frequency_entropy(tf.constant([0.5, 0.5])).numpy(),
                               -2 * math.log(2), rtol=1e-6)
    np.testing.assert_allclose(losses.negative_frequency_entropy(tf.constant([0.9, 0.5])).numpy(),
                               -1.0182300195, rtol=1e-6)


def test_consistency():
    # (0.2 - 0.5)^2 + (0.9 - 0.7)^2 = 0.09 + 0.04 = 0.13; identical codes -> 0.
    t = tf.constant([[0.2, 0.9], [0.3, 0.3]])
    t_tilde = tf.constant([[0.5, 0.7], [0.3, 0.3]])
    np.testing.assert_allclose(losses.consistency(t, t_tilde).numpy(), [0.13, 0.0], atol=1e-7)


def test_independence_uses_the_bits_by_bits_gram_matrix():
    # W (hidden=3, K=2) with orthonormal columns: W^T W = I -> 0, although W W^T (3x3) is not I.
    w = tf.constant([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    assert losses.independence(w).numpy() == pytest.approx(0.0)
    # Columns (1, 1, 0) and (1, 0, 0): W^T W = [[2, 1], [1, 1]]; minus I = [[1, 1], [1, 0]] -> 1+1+1+0 = 3.
    w = tf.constant([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    assert losses.independence(w).numpy() == pytest.approx(3.0)


def test_collaborative():
    # E(G(z)) = (0.8, 0.3), b' = (1, 0): 0.2^2 + 0.3^2 = 0.04 + 0.09 = 0.13.
    np.testing.assert_allclose(losses.collaborative(tf.constant([[0.8, 0.3]]), tf.constant([[1, 0]])).numpy(),
                               [0.13], atol=1e-7)


def test_feature_matching():
    # Mean features (1, 2, 3) vs (1, 0, 5): 0 + 4 + 4 = 8.
    assert losses.feature_matching(tf.constant([1.0, 2.0, 3.0]), tf.constant([1.0, 0.0, 5.0])).numpy() == pytest.approx(8.0)


def test_discriminator_cross_entropy():
    # Logit 0 on both sides: -ln(1/2) - ln(1/2) = 2 ln 2 = 1.386294.
    # Real logit ln 3 (D = 3/4) and fake logit -ln 3 (D = 1/4): -ln(3/4) - ln(3/4) = 0.575364.
    real = tf.constant([0.0, math.log(3.0)])
    fake = tf.constant([0.0, -math.log(3.0)])
    np.testing.assert_allclose(losses.discriminator_cross_entropy(real, fake).numpy(),
                               [2 * math.log(2), -2 * math.log(0.75)], rtol=1e-6)
