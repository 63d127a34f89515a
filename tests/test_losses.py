"""Known-answer tests for the loss terms of every scheme (tfhash.losses); arithmetic in the comments."""

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
    loss = losses.feature_matching(tf.constant([1.0, 2.0, 3.0]), tf.constant([1.0, 0.0, 5.0]))
    assert loss.numpy() == pytest.approx(8.0)


def test_discriminator_cross_entropy():
    # Logit 0 on both sides: -ln(1/2) - ln(1/2) = 2 ln 2 = 1.386294.
    # Real logit ln 3 (D = 3/4) and fake logit -ln 3 (D = 1/4): -ln(3/4) - ln(3/4) = 0.575364.
    real = tf.constant([0.0, math.log(3.0)])
    fake = tf.constant([0.0, -math.log(3.0)])
    np.testing.assert_allclose(losses.discriminator_cross_entropy(real, fake).numpy(),
                               [2 * math.log(2), -2 * math.log(0.75)], rtol=1e-6)


# --- SiGAH terms -----------------------------------------------------------------------------------


def test_pairwise_distances_and_heat_kernel_similarity():
    x = tf.constant([[0.0, 0.0], [3.0, 4.0], [0.0, 8.0]])
    distances = losses.pairwise_distances(x).numpy()
    # |x0 - x1| = 5, |x0 - x2| = 8, |x1 - x2| = sqrt(9 + 16) = 5; the diagonal is ~0 (sqrt of the 1e-12 floor).
    np.testing.assert_allclose(distances, [[0, 5, 8], [5, 0, 5], [8, 5, 0]], atol=1e-5)
    s = losses.heat_kernel_similarity(x, sigma=0.5).numpy()
    np.testing.assert_allclose(s, [[0, math.exp(-2.5), math.exp(-4)], [math.exp(-2.5), 0, math.exp(-2.5)],
                                   [math.exp(-4), math.exp(-2.5), 0]], rtol=1e-5)
    # sigma=None: 1 / mean distance over all 9 entries = 9 / 36 = 0.25.
    np.testing.assert_allclose(losses.heat_kernel_similarity(x).numpy()[0, 1], math.exp(-0.25 * 5), rtol=1e-4)


def test_graph_smoothness_averages_over_all_pairs():
    similarity = tf.constant([[0.0, 1.0], [1.0, 0.0]])
    codes = tf.constant([[1.0, 1.0], [-1.0, 1.0]])  # distance 2 between the two items
    # (0 + 1*2 + 1*2 + 0) / 4 pairs = 1.
    np.testing.assert_allclose(losses.graph_smoothness(similarity, codes).numpy(), 1.0, rtol=1e-5)


def test_reconstruction_error_norm_and_mse():
    x = tf.constant([[0.0, 0.0], [1.0, 1.0]])
    reconstruction = tf.constant([[3.0, 4.0], [1.0, 1.0]])
    np.testing.assert_allclose(losses.reconstruction_error(reconstruction, x, "norm").numpy(), [5.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(losses.reconstruction_error(reconstruction, x, "mse").numpy(), [12.5, 0.0])  # 25 / 2


def test_quantization_sign():
    codes = tf.constant([[1.0, -1.0], [0.5, 0.0]])
    # ||h||^2 / r: 2 / 2 = 1 and 0.25 / 2 = 0.125; the bound's term is its negative (Eq. 9).
    np.testing.assert_allclose(losses.quantization(codes, "bound").numpy(), [-1.0, -0.125])
    np.testing.assert_allclose(losses.quantization(codes, "printed").numpy(), [1.0, 0.125])


def test_sparsity_norms():
    activations = tf.constant([[3.0, -4.0]])
    np.testing.assert_allclose(losses.sparsity(activations, "l2").numpy(), [5.0], rtol=1e-6)
    np.testing.assert_allclose(losses.sparsity(activations, "l1").numpy(), [7.0])


def test_energy_and_margin_loss():
    x = tf.constant([[1.0, 2.0]])
    np.testing.assert_allclose(losses.energy(tf.constant([[1.0, 4.0]]), x).numpy(), [2.0])  # (0 + 4) / 2
    # D(x) + max(0, m - D(x^)): 0.05 + max(0, 0.1 - 0.02) = 0.13; with D(x^) above the margin only D(x) is left.
    np.testing.assert_allclose(losses.energy_margin(tf.constant([0.05, 0.05]), tf.constant([0.02, 0.5]), 0.1).numpy(),
                               [0.13, 0.05], rtol=1e-6)


def test_continuation_sign_tends_to_the_sign():
    z = tf.constant([-2.0, -0.05, 0.0, 0.3, 1.5])
    np.testing.assert_allclose(losses.continuation_sign(z, 1.0, "app").numpy(), [-1.0, -0.05, 0.0, 0.3, 1.0])
    np.testing.assert_allclose(losses.continuation_sign(z, 10.0, "app").numpy(), [-1.0, -0.5, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(losses.continuation_sign(z, 100.0, "tanh").numpy(), np.sign(z.numpy()), atol=1e-3)


def test_neighbour_structure_known_answer_and_gradient_of_eq_10():
    codes = tf.constant([[1.0, 1.0], [1.0, -1.0], [0.5, 0.5]])
    similarity = tf.constant([[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0], [1.0, -1.0, 1.0]])
    mask = 1.0 - tf.eye(3)
    # Row 0: (0,1) inner 0, S01 = S10 = -1 -> 1/2 (1 + 1) = 1; (0,2) inner 0.5, S02 = S20 = 1 -> 1/2 (0.25 + 0.25).
    # Row 1: (1,0) -> 1; (1,2) inner 0, S12 = 1, S21 = -1 -> 1/2 (1 + 1) = 1.
    # Row 2: (2,0) -> 0.25; (2,1) inner 0, S21 = -1, S12 = 1 -> 1.
    per_row = losses.neighbour_structure(codes, codes, similarity, tf.transpose(similarity), mask)
    np.testing.assert_allclose(per_row.numpy(), [1.25, 2.0, 1.25])
    # Its gradient is Eq. 10's: 1/2 sum over ordered pairs i != j of (c_i . c_j / L - S_ij)^2.
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(codes)
        ours = tf.reduce_sum(losses.neighbour_structure(codes, codes, similarity, tf.transpose(similarity), mask))
        inner = tf.matmul(codes, codes, transpose_b=True) / 2.0
        eq10 = 0.5 * tf.reduce_sum(mask * tf.square(inner - similarity))
    np.testing.assert_allclose(tape.gradient(ours, codes).numpy(), tape.gradient(eq10, codes).numpy(), rtol=1e-6)
    np.testing.assert_allclose(ours.numpy(), 2 * eq10.numpy(), rtol=1e-6)


def test_neighbour_structure_weighs_neighbour_pairs():
    codes = tf.constant([[1.0, 1.0], [1.0, -1.0]])
    similarity = tf.constant([[1.0, 1.0], [-1.0, 1.0]])  # 0 lists 1; 1 does not list 0
    mask = 1.0 - tf.eye(2)
    # Pair (0,1): inner 0; S01 = +1 (weight 3), S10 = -1 (weight 1) -> 1/2 (3 * 1 + 1 * 1) = 2 for each row.
    per_row = losses.neighbour_structure(codes, codes, similarity, tf.transpose(similarity), mask, positive_weight=3.0)
    np.testing.assert_allclose(per_row.numpy(), [2.0, 2.0])


def test_triplet_ranking():
    # a=(0,0), p=(1,0), n=(1,1): ||a-p||^2 = 1, ||a-n||^2 = 2 -> max(0, 1 - 2 + 1) = 0.
    # a=(0,0), p=(1,1), n=(1,0): max(0, 1 - 1 + 2) = 2. Margin 0.5 on the first: max(0, 0.5 - 2 + 1) = 0.
    a = tf.zeros((2, 2))
    p = tf.constant([[1.0, 0.0], [1.0, 1.0]])
    n = tf.constant([[1.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(losses.triplet_ranking(a, p, n), [0.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(losses.triplet_ranking(a, p, n, margin=3.0), [2.0, 4.0], atol=1e-6)


def test_classification_single_and_multi_label():
    # Softmax over logits (0, ln 3): p = (1/4, 3/4); class 1 -> -ln 0.75 = 0.287682; an all-zero row costs 0.
    logits = tf.constant([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    rows = tf.constant([[0.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(losses.classification(logits, rows), [0.287682, 0.0], atol=1e-5)
    # Sigmoids: sigma(0) = 0.5 -> ln 2 for label 0; sigma(ln 3) = 0.75 -> -ln 0.75 for label 1; summed = 0.980829.
    np.testing.assert_allclose(losses.classification(logits, rows, multi_label=True), [0.980829, 0.0], atol=1e-5)


def test_straight_through_sign_forward_and_gradient():
    h = tf.constant([[-0.3, 0.0, 2.0]])
    with tf.GradientTape() as tape:
        tape.watch(h)
        b = losses.straight_through_sign(h)
        total = tf.reduce_sum(b * tf.constant([[1.0, 2.0, 3.0]]))
    np.testing.assert_array_equal(b.numpy(), [[-1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(tape.gradient(total, h).numpy(), [[1.0, 2.0, 3.0]])  # identity backward


def test_nt_xent_known_answer():
    a = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    b = tf.constant([[1.0, 0.0], [0.0, 2.0]])  # scale does not matter: cosine
    # Anchor a0: positive b0 (cos 1), negatives a1 (0), b1 (0); temperature 0.5 -> logits 2, 0, 0.
    expected = -np.log(np.exp(2.0) / (np.exp(2.0) + 2.0))
    np.testing.assert_allclose(losses.nt_xent(a, b, 0.5).numpy(), [expected] * 4, rtol=1e-6)
    swapped = losses.nt_xent(a, tf.reverse(b, axis=[0]), 0.5).numpy()  # positives now orthogonal: larger loss
    assert np.all(swapped > expected + 1.0)


def test_bernoulli_kl_known_answer():
    p, q = tf.constant([[0.5, 0.9]]), tf.constant([[0.5, 0.5]])
    expected = 0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5)
    np.testing.assert_allclose(losses.bernoulli_kl(p, q).numpy(), [expected], rtol=1e-5)
    np.testing.assert_allclose(losses.bernoulli_kl(q, q).numpy(), [0.0], atol=1e-7)


def test_cosine_structure_and_cubic_penalty_known_answers():
    codes_a, codes_b = tf.constant([[1.0, 1.0], [1.0, -1.0]]), tf.constant([[1.0, 1.0], [1.0, 1.0]])
    targets_a, targets_b = tf.constant([[1.0, 0.0], [3.0, 4.0]]), tf.constant([[0.0, 1.0], [3.0, 4.0]])
    # pair 0: cos codes 1, cos targets 0 -> 1; pair 1: cos codes 0, cos targets 1 -> 1.
    np.testing.assert_allclose(losses.cosine_structure(codes_a, codes_b, targets_a, targets_b).numpy(), [1.0, 1.0],
                               atol=1e-6)
    np.testing.assert_allclose(losses.cubic_penalty(tf.constant([[1.0, -1.0], [0.0, 3.0]])).numpy(), [0.0, 4.5])


def test_generator_adversarial_minimax_and_non_saturating_known_answers():
    logits = tf.constant([[0.0], [np.log(3.0)]])  # D(G(z)) = 0.5 and 0.75
    np.testing.assert_allclose(losses.generator_adversarial(logits, "minimax").numpy(),
                               [np.log(0.5), np.log(0.25)], rtol=1e-6)  # log(1 - D)
    np.testing.assert_allclose(losses.generator_adversarial(logits, "non_saturating").numpy(),
                               [-np.log(0.5), -np.log(0.75)], rtol=1e-6)  # -log D
