"""Loss terms of the hashing schemes as pure TensorFlow functions.

Every per-example function returns a ``[batch]`` tensor so the caller can average it over the *global*
batch (``tf.nn.compute_average_loss``) under any ``tf.distribute`` strategy. Terms that depend on batch
statistics take those statistics as arguments, so the caller decides how they are gathered.
Probabilities are sigmoid outputs in (0, 1); they are clipped to [eps, 1 - eps] before any log.
"""

from __future__ import annotations

import tensorflow as tf

EPSILON = 1e-7


def _clip(p):
    return tf.clip_by_value(p, EPSILON, 1.0 - EPSILON)


def bit_entropy(probabilities: tf.Tensor) -> tf.Tensor:
    """Per-example entropy of K independent bits (nats): -sum_k t log t + (1 - t) log(1 - t).

    HashGAN Eq. 3, "minimum entropy bits": minimising it pushes every output towards 0 or 1.
    Returns ``[batch]``.
    """
    t = _clip(probabilities)
    return -tf.reduce_sum(t * tf.math.log(t) + (1.0 - t) * tf.math.log(1.0 - t), axis=-1)


def negative_frequency_entropy(frequencies: tf.Tensor) -> tf.Tensor:
    """sum_k f_k log f_k + (1 - f_k) log(1 - f_k) for bit frequencies ``f`` ``[K]`` (a scalar).

    HashGAN Eq. 3, "uniform frequency bits": minimising it (maximising the entropy of each bit's
    frequency over the batch) balances the bits; its minimum, -K log 2, is at f_k = 1/2.
    """
    f = _clip(frequencies)
    return tf.reduce_sum(f * tf.math.log(f) + (1.0 - f) * tf.math.log(1.0 - f))


def consistency(probabilities: tf.Tensor, transformed_probabilities: tf.Tensor) -> tf.Tensor:
    """Per-example ||t - t~||^2 between the codes of an image and of a transformed copy (Eq. 3). ``[batch]``."""
    return tf.reduce_sum(tf.square(probabilities - transformed_probabilities), axis=-1)


def independence(kernel: tf.Tensor) -> tf.Tensor:
    """||W^T W - I||_F^2 for the encoder's last-layer kernel W of shape ``[hidden, K]`` (Eq. 3).

    The Gram matrix is K x K (bits x bits): pushing it to I makes the bit projections orthonormal.
    The hidden x hidden matrix W W^T has rank at most K < hidden and could never reach I.
    """
    bits = tf.shape(kernel)[-1]
    gram = tf.matmul(kernel, kernel, transpose_a=True)
    return tf.reduce_sum(tf.square(gram - tf.eye(bits, dtype=kernel.dtype)))


def collaborative(probabilities: tf.Tensor, target_bits: tf.Tensor) -> tf.Tensor:
    """Per-example ||E(G(z)) - b'||^2 between the codes of synthetic images and the generator's
    binary input b' (HashGAN Eq. 4). ``[batch]``."""
    return tf.reduce_sum(tf.square(probabilities - tf.cast(target_bits, probabilities.dtype)), axis=-1)


def feature_matching(real_feature_mean: tf.Tensor, fake_feature_mean: tf.Tensor) -> tf.Tensor:
    """||E F(x) - E F(G(z))||^2 between mean features of real and synthetic batches (Eq. 5; Salimans
    et al. 2016). Takes the means, so the caller can gather them over the global batch."""
    return tf.reduce_sum(tf.square(real_feature_mean - fake_feature_mean))


def discriminator_cross_entropy(real_logits: tf.Tensor, fake_logits: tf.Tensor) -> tf.Tensor:
    """Per-example GAN discriminator loss (negated Eq. 2) from logits: -log D(x) - log(1 - D(G(z))).

    ``real_logits`` and ``fake_logits`` are ``[batch]`` (or ``[batch, 1]``); returns ``[batch]`` pairs summed.
    """
    real_logits, fake_logits = tf.reshape(real_logits, [-1]), tf.reshape(fake_logits, [-1])
    real = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.ones_like(real_logits), logits=real_logits)
    fake = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.zeros_like(fake_logits), logits=fake_logits)
    return real + fake


# ---------------------------------------------------------------------------------------------------
# SiGAH (sparsity-induced generative adversarial hashing) terms.


def pairwise_distances(a: tf.Tensor) -> tf.Tensor:
    """Euclidean distances ``[n, n]`` between the rows of ``a`` ``[n, d]``, through the Gram matrix (no
    ``[n, n, d]`` tensor); a tiny floor under the root keeps the gradient finite at zero distance."""
    squares = tf.reduce_sum(tf.square(a), axis=-1)
    squared = squares[:, None] + squares[None, :] - 2.0 * tf.matmul(a, a, transpose_b=True)
    return tf.sqrt(tf.maximum(squared, 0.0) + 1e-12)


def heat_kernel_similarity(x: tf.Tensor, sigma: float | None = None) -> tf.Tensor:
    """S_ij = exp(-sigma ||x_i - x_j||) for i != j and 0 on the diagonal (SiGAH Eq. 17), no gradient.

    ``sigma=None`` uses 1 / (mean pairwise distance), which keeps S in a useful range for any feature scale.
    """
    distances = pairwise_distances(x)
    if sigma is None:
        sigma = 1.0 / (tf.reduce_mean(distances) + 1e-12)
    off_diagonal = 1.0 - tf.eye(tf.shape(x)[0], dtype=x.dtype)
    return tf.stop_gradient(tf.exp(-sigma * distances) * off_diagonal)


def graph_smoothness(similarity: tf.Tensor, codes: tf.Tensor) -> tf.Tensor:
    """mean_ij S_ij ||h_i - h_j|| over the batch's N^2 pairs (SiGAH L_S, Eq. 17; a scalar).

    Averaged rather than summed so the weight does not depend on the batch size."""
    return tf.reduce_mean(similarity * pairwise_distances(codes))


def reconstruction_error(reconstruction: tf.Tensor, x: tf.Tensor, kind: str = "norm") -> tf.Tensor:
    """Per-example ||x^ - x|| (``"norm"``, SiGAH Eq. 20 as printed) or the mean squared error over the
    features (``"mse"``). ``[batch]``."""
    squared = tf.reduce_sum(tf.square(reconstruction - x), axis=-1)
    if kind == "norm":
        return tf.sqrt(squared + 1e-12)
    return squared / tf.cast(tf.shape(x)[-1], x.dtype)


def quantization(codes: tf.Tensor, sign: str = "bound") -> tf.Tensor:
    """Per-example quantisation term of relaxed codes h in [-1, 1] ``[batch, r]``: ``-||h||^2 / r``.

    SiGAH Eq. 9 bounds the Hamming error by r - Tr(h h^T), so minimising ``-||h||^2 / r`` (``"bound"``)
    brings h to the binary corners; ``"printed"`` gives Eq. 13 / 20's ``+||h||^2 / r``. ``[batch]``.
    """
    squared_norm = tf.reduce_mean(tf.square(codes), axis=-1)
    return -squared_norm if sign == "bound" else squared_norm


def sparsity(activations: tf.Tensor, norm: str = "l2") -> tf.Tensor:
    """Per-example norm of the generator's sparse layer: ``"l2"`` (SiGAH Eq. 20 as printed) or ``"l1"``. ``[batch]``."""
    if norm == "l2":
        return tf.sqrt(tf.reduce_sum(tf.square(activations), axis=-1) + 1e-12)
    return tf.reduce_sum(tf.abs(activations), axis=-1)


def energy(autoencoder_output: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """Per-example energy of an auto-encoder discriminator: mean squared reconstruction error (EBGAN). ``[batch]``."""
    return tf.reduce_mean(tf.square(autoencoder_output - x), axis=-1)


def energy_margin(energy_real: tf.Tensor, energy_fake: tf.Tensor, margin: float) -> tf.Tensor:
    """Per-example discriminator loss of SiGAH Eq. 21 (EBGAN): D(x) + max(0, margin - D(x^)). ``[batch]``."""
    return energy_real + tf.nn.relu(margin - energy_fake)


# --- BGAN (Song et al., AAAI 2018) -----------------------------------------------------------------


def continuation_sign(z: tf.Tensor, beta: float | tf.Tensor, kind: str = "app") -> tf.Tensor:
    """BGAN's smooth stand-in for sign(z): app(beta z) (Eq. 5-6, clip to [-1, 1]) or tanh(beta z) (Eq. 7).

    Both tend to sign(z) as beta grows; training raises beta in stages (Sec. 3.4).
    """
    import keras  # keras.ops: also usable on the symbolic inputs of the exported encoder

    if kind == "app":
        return keras.ops.clip(beta * z, -1.0, 1.0)
    if kind == "tanh":
        return keras.ops.tanh(beta * z)
    raise ValueError(f"`kind` must be 'app' or 'tanh', got {kind!r}.")


def neighbour_structure(codes: tf.Tensor, other_codes: tf.Tensor, similarity: tf.Tensor,
                        similarity_transposed: tf.Tensor, pair_mask: tf.Tensor,
                        positive_weight: float | tf.Tensor = 1.0) -> tf.Tensor:
    """BGAN's neighbour structure loss (Eq. 10) for the pairs (i, j) of ``codes`` ``[b, L]`` and ``other_codes``
    ``[B, L]``: per row i, sum_j mask_ij * 1/2 [(c_i . c_j / L - S_ij)^2 + (c_i . c_j / L - S_ji)^2]. ``[b]``.

    Eq. 10 sums 1/2 (b_i . b_j / L - S_ij)^2 over ordered pairs. Written per row with both orders, and with
    ``other_codes`` held fixed (stop-gradient), each row's gradient is exactly Eq. 10's gradient for its own
    code -- so rows split across replicas (each holding its items against the gathered global batch) train as
    one device would. The value counts every pair twice; halve it to report Eq. 10. ``positive_weight``
    multiplies the terms of neighbour pairs (S = +1); 1 is Eq. 10.
    """
    inner = (tf.matmul(codes, tf.stop_gradient(other_codes), transpose_b=True)
             / tf.cast(tf.shape(codes)[-1], codes.dtype))

    def weight(s):
        return 1.0 + (positive_weight - 1.0) * tf.cast(s > 0, codes.dtype)

    terms = 0.5 * (weight(similarity) * tf.square(inner - similarity)
                   + weight(similarity_transposed) * tf.square(inner - similarity_transposed))
    return tf.reduce_sum(terms * pair_mask, axis=-1)


def pixel_mse(reconstruction: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """Per-example mean squared pixel error (Eq. 11). ``[batch]``."""
    axes = list(range(1, len(x.shape)))
    return tf.reduce_mean(tf.square(reconstruction - x), axis=axes)


def binary_cross_entropy_logits(logits: tf.Tensor, target: float | tf.Tensor) -> tf.Tensor:
    """Per-example sigmoid cross-entropy of ``logits`` ``[batch, 1]`` against a constant target 0 or 1. ``[batch]``."""
    labels = tf.fill(tf.shape(logits), tf.cast(target, logits.dtype))
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), axis=-1)


GENERATOR_LOSSES = ("minimax", "non_saturating")


def generator_adversarial(fake_logits: tf.Tensor, kind: str) -> tf.Tensor:
    """A generator's adversarial loss on the discriminator's logits for its fakes. ``[batch]``.

    ``"minimax"``: minimise log(1 - D(G(z))), the objective as GAN papers write it; ``"non_saturating"``:
    minimise -log D(G(z)), which keeps the gradient alive when D rejects the fakes (Goodfellow et al. 2014).
    """
    if kind == "minimax":
        return -binary_cross_entropy_logits(fake_logits, 0.0)
    return binary_cross_entropy_logits(fake_logits, 1.0)


def triplet_ranking(anchor: tf.Tensor, positive: tf.Tensor, negative: tf.Tensor, margin: float = 1.0) -> tf.Tensor:
    """Eq. 3 of DSH-GANs: max(0, margin - ||a - n||^2 + ||a - p||^2), Hamming distance relaxed to squared L2.
    ``[batch]``."""
    closer = tf.reduce_sum(tf.square(anchor - positive), axis=-1)
    farther = tf.reduce_sum(tf.square(anchor - negative), axis=-1)
    return tf.nn.relu(margin - farther + closer)


def classification(logits: tf.Tensor, label_rows: tf.Tensor, multi_label: bool = False) -> tf.Tensor:
    """Per-example classification loss against 0/1 label rows ``[batch, classes]``: softmax cross-entropy
    (Eq. 5; one class per row) or, for multi-label rows, sigmoid cross-entropy summed over classes (Eq. 6).
    ``[batch]``; an all-zero row (unlabelled) costs 0."""
    label_rows = tf.cast(label_rows, logits.dtype)
    if multi_label:
        terms = tf.nn.sigmoid_cross_entropy_with_logits(labels=label_rows, logits=logits)
        return tf.reduce_sum(terms, axis=-1) * tf.cast(tf.reduce_any(label_rows > 0, axis=-1), logits.dtype)
    return tf.nn.softmax_cross_entropy_with_logits(labels=label_rows, logits=logits)


def straight_through_sign(values: tf.Tensor) -> tf.Tensor:
    """sign(values) in {-1, +1} (0 maps to +1) forward, the identity's gradient backward (GreedyHash's
    "greedy" step; CIBHash applies it to p - 0.5)."""
    return values + tf.stop_gradient(tf.where(values >= 0.0, 1.0, -1.0) - values)


def nt_xent(codes_a: tf.Tensor, codes_b: tf.Tensor, temperature: float) -> tf.Tensor:
    """Per-anchor NT-Xent (SimCLR) loss of two views ``[n, K]`` of the same n items: ``[2n]``.

    Anchor i of view a (rows 0..n-1) and of view b (rows n..2n-1) has its other view as the positive and
    the 2n - 2 other codes as negatives, under cosine similarity divided by ``temperature``:
    -log(exp(s_pos) / sum_{j != anchor} exp(s_j)).
    """
    codes = tf.math.l2_normalize(tf.concat([codes_a, codes_b], axis=0), axis=-1)
    n = tf.shape(codes_a)[0]
    logits = tf.matmul(codes, codes, transpose_b=True) / temperature
    logits = logits - 1e9 * tf.eye(2 * n, dtype=logits.dtype)  # an anchor is never its own negative
    positives = tf.concat([tf.range(n, 2 * n), tf.range(0, n)], axis=0)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=positives, logits=logits)


def bernoulli_kl(probabilities: tf.Tensor, other_probabilities: tf.Tensor) -> tf.Tensor:
    """Per-example KL(Bern(p) || Bern(q)) summed over bits: ``[batch]``."""
    p, q = _clip(probabilities), _clip(other_probabilities)
    return tf.reduce_sum(p * (tf.math.log(p) - tf.math.log(q))
                         + (1.0 - p) * (tf.math.log(1.0 - p) - tf.math.log(1.0 - q)), axis=-1)


def cosine_structure(codes_a: tf.Tensor, codes_b: tf.Tensor, targets_a: tf.Tensor, targets_b: tf.Tensor) -> tf.Tensor:
    """Per-pair (cos(b_a, b_b) - cos(t_a, t_b))^2 for paired rows of codes and of target features
    (GreedyHash's unsupervised loss, pairs = the two halves of a batch). ``[pairs]``."""
    def cosine(a, b):
        return tf.reduce_sum(tf.math.l2_normalize(a, axis=-1) * tf.math.l2_normalize(b, axis=-1), axis=-1)

    return tf.square(cosine(codes_a, codes_b) - cosine(targets_a, targets_b))


def cubic_penalty(values: tf.Tensor) -> tf.Tensor:
    """Per-example mean over outputs of ||h| - 1|^3, which pulls outputs towards +-1 (GreedyHash). ``[batch]``."""
    return tf.reduce_mean(tf.abs(tf.pow(tf.abs(values) - 1.0, 3)), axis=-1)
