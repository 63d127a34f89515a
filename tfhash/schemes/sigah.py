"""SiGAH: sparsity-induced generative adversarial hashing of feature vectors (Liu et al., ``sigah.txt``).

Hamming neighbours should approximate Euclidean neighbours of the input features (GIST, CNN
descriptors, raw pixels). The networks (Sec. 3, Sec. 4 "Implementation"):

* hash function h = tanh(W x) (one dense layer, no bias), bits b = [h >= 0];
* generator: one dense layer with LeakyReLU from h to m = 2d sparse units, then a fixed random
  Gaussian matrix Psi ~ N(0, 1/d) (d x m; non-trainable, drawn from the seed, saved with the model)
  back to the feature space: x^ = Psi G(h) (Eq. 5);
* discriminator: an auto-encoder [d - 50 - d] whose mean squared reconstruction error is the energy
  D(.) (EBGAN style, Sec. 3.3).

One training step = a discriminator update with the margin loss of Eq. 21,
D(x) + max(0, beta - D(x^)), then an update of hash function and generator with Eq. 20:
||x^ - x|| + alpha * quantisation + lambda ||G(h)||_2 + gamma * L_S, plus the adversarial term D(x^).

Choices where the paper is open (each an argument):

* **Quantisation sign.** Eq. 9 bounds the Hamming error of relaxed codes by r - Tr(h h^T), so the
  term that brings h to the binary corners is -alpha * Tr(h h^T). Eq. 13 / 20 print +alpha * Tr(h h^T),
  which would pull every h to 0 (all codes on the threshold). Default ``quantization_sign="bound"``
  (minimise -alpha ||h||^2 / r, per bit); ``"printed"`` gives the printed +alpha ||h||^2 / r.
* **Adversarial term.** Eq. 20 lists no discriminator term, yet without one D never reaches the
  generator and Table 4's "w/o discriminator" ablation would change nothing. As in EBGAN (the paper's
  [54]) the generator also minimises D(x^) (``weight_adversarial``; 0 gives the ablation).
* **Graph term** L_S = sum_ij S_ij ||h_i - h_j|| over the (per-replica) batch, S_ij =
  exp(-sigma ||x_i - x_j||) (Eq. 17), averaged over the N_B^2 pairs so its weight does not depend on
  the batch size. sigma is not given in the paper; ``graph_sigma=None`` uses 1 / (mean in-batch distance),
  which keeps S in a useful range for any feature scale.
  Under a ``tf.distribute`` strategy the pairs are those of each replica's share of the batch;
  the reconstruction, quantisation, sparsity and adversarial terms are averaged over the global batch.
* **Feature scaling.** Features are centred and scaled before hashing with statistics of the
  training set, stored in the model (so exports apply them). ``standardize="global"`` (default)
  divides by one global scale, which keeps Euclidean neighbours as they are (the ANN protocol's ground
  truth); ``"per_feature"`` z-scores each feature; ``None`` uses the raw features.
* **Initial hash function.** Sec. 4 draws every weight as a random Gaussian matrix
  (``hash_init="gaussian"``, the paper's). ``"pca"`` starts W at the top principal directions of the
  standardised training features and ``"itq"`` at PCA followed by ITQ's rotation (Gong & Lazebnik), so
  training starts from the codes of those linear methods and refines them with Eq. 20. Each column is
  scaled so that its projections have standard deviation ``init_scale`` (tanh in its linear range at 1).
* **Optimiser.** Sec. 4 says SGD with learning rate 1e-2 and weight decay 5e-4, Sec. 3 and the abstract
  say Adam; ``optimizer_type="adam"`` (default) or ``"sgd"``, both with that learning rate and weight decay.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfhash import codes as codes_lib
from tfhash import distribution, losses
from tfhash.encoding import item_chunks
from tfhash.schemes import settings
from tfhash.schemes.base import HashingScheme, SchemeSpec
from tfhash.schemes.layers import OPTIMIZERS, OUTPUT_DTYPE, Standardize
from tfhash.schemes.presets import Preset, named
from tfhash.schemes.registry import register

STANDARDIZE = ("global", "per_feature", None)

QUANTIZATION_SIGNS = ("bound", "printed")
SPARSITY_NORMS = ("l2", "l1")
RECONSTRUCTION_LOSSES = ("norm", "mse")
GENERATOR_INPUTS = ("relaxed", "straight_through")
HASH_INITS = ("gaussian", "pca", "itq")
INIT_SAMPLE = 20000  # items the PCA / ITQ initialisation is fitted on (a stream's first ones)


def _first_rows(x, count, chunk_size=65536):
    """Up to ``count`` leading items of ``x`` (array or batched dataset) as a float64 matrix ``[n, d]``."""
    parts, n = [], 0
    for chunk in item_chunks(x, chunk_size):
        chunk = chunk.astype(np.float64).reshape(chunk.shape[0], -1)[:count - n]
        parts.append(chunk)
        n += chunk.shape[0]
        if n >= count:
            break
    return np.concatenate(parts)


def feature_statistics(x: Any, mode: str = "global", chunk_size: int = 65536) -> tuple:
    """Mean ``[d]`` and scale ``[d]`` of features ``[n, ...]`` (an array, memory-mapped or not, or a batched
    ``tf.data.Dataset``), streamed a chunk at a time so large files are read once. Constant features get
    scale 1 (they stay 0 after centring).
    """
    total = squares = None
    n = 0
    for chunk in item_chunks(x, chunk_size):
        chunk = chunk.astype(np.float64).reshape(chunk.shape[0], -1)
        if total is None:
            total, squares = np.zeros(chunk.shape[1]), np.zeros(chunk.shape[1])
        total += chunk.sum(axis=0)
        squares += np.square(chunk).sum(axis=0)
        n += chunk.shape[0]
    if not n:
        raise ValueError("`x` holds no items to fit the feature standardisation on.")
    d = total.shape[0]
    mean = total / n
    variance = np.maximum(squares / n - np.square(mean), 0.0)
    constant = variance <= 1e-12 * np.maximum(1.0, np.square(mean))
    if np.all(constant):
        raise ValueError(f"`x` has all-constant features (every one of the {d} features takes a single value "
                         "over the training set): there is nothing to hash. Check that the right file or column "
                         "range was read.")
    if mode == "per_feature":
        scale = np.where(constant, 1.0, np.sqrt(variance))
    else:  # one scale for all features: root mean variance, so the average feature has unit variance
        scale = np.full(d, math.sqrt(variance.mean()))
    return mean.astype(np.float32), scale.astype(np.float32)


@register("sigah")
class SiGAH(HashingScheme):
    """SiGAH. Defaults follow Sec. 4 (alpha 1e-3, lambda = gamma = 1e-4, beta 0.1, lr 1e-2, weight
    decay 5e-4; the paper's batch size is 500, which ``tfhash.fit(batch_size=500)`` sets).

    Args:
        bits: code length r.
        input_shape: one item's shape; items are flattened to d features.
        seed: seeds initialisation, Psi and training.
        sparse_units: m, the generator's sparse width (Sec. 4: 2d); ``None`` means 2d.
        discriminator_units: the auto-encoder bottleneck d_l (Sec. 4: 50).
        weight_reconstruction, weight_quantization (alpha), weight_sparsity (lambda), weight_graph
        (gamma), weight_adversarial: loss weights of Eq. 20 (and the EBGAN generator term).
        margin: beta of Eq. 21 (Sec. 4 / Fig. 7: 0.1).
        graph_sigma: sigma of S_ij; ``None``: 1 / mean in-batch distance.
        reconstruction_loss: ``"norm"`` (||x^ - x||, Eq. 20 as printed) or ``"mse"`` (mean squared error).
        generator_input: ``"relaxed"`` (tanh(Wx), Sec. 3.4) or ``"straight_through"`` (the binary codes,
            with the gradient of tanh).
        quantization_sign: ``"bound"`` (Eq. 9, default) or ``"printed"`` (Eq. 20 as printed).
        sparsity_norm: ``"l2"`` (Eq. 20 as printed) or ``"l1"`` (the usual sparsity-inducing norm).
        standardize: ``"global"``, ``"per_feature"`` or ``None`` (see the module docstring).
        optimizer_type: ``"adam"`` or ``"sgd"``; learning_rate, weight_decay: Sec. 4 (1e-2, 5e-4).
        hash_init: ``"gaussian"`` (Sec. 4), ``"pca"`` or ``"itq"`` (see the module docstring).
        hash_warmup_fraction: fraction of training during which the hash function keeps its initial
            weights while generator and discriminator learn to decode them (0 in the paper).
        init_scale: standard deviation of each bit's projection after a ``"pca"`` / ``"itq"`` initialisation.
        final_learning_rate: ``None`` keeps the learning rate constant (Sec. 4); a number decays it
            linearly to that value over training.
        leaky_slope: negative slope of the generator's LeakyReLU.
    """

    loss_names = ("d_loss", "g_loss", "reconstruction", "quantization", "sparsity", "graph", "energy_real",
                  "energy_fake", "bit_freq_min", "bit_freq_max")
    threshold = codes_lib.TANH_THRESHOLD
    input_kind = "features"
    spec = SchemeSpec(
        encoder_players=("hash_function",),
        retrieval_protocol="euclidean",  # Sec. 5: the top-1,000 Euclidean neighbours are relevant
        paper_baselines=("lsh", "itq", "sph"),  # Tables 1-3
        ablations={"-discriminator": {"weight_adversarial": 0.0}},  # Table 4: an auto-encoder model
        replica_local_terms={"weight_graph": 0.0},  # Eq. 17's pairs are those of each replica's share
    )
    presets = named(
        paper=Preset(
            description="The paper's settings (Sec. 4): alpha 1e-3, lambda = gamma = 1e-4, margin beta 0.1, learning "
                        "rate 1e-2 with weight decay 5e-4, batch size N_B = 500, discriminator bottleneck 50, m = 2d "
                        "sparse units. The paper does not state epochs. These are the constructor defaults.",
            epochs=30, batch_size=500, selected_on="paper (Sec. 4)"),
        ann=Preset(
            description="A quantisation weight large enough to bring |h| near 1 against the reconstruction norm of "
                        "standardised features (alpha is scale-dependent; the paper's 1e-3 leaves |h| ~ 0.5 here) "
                        "and the learning rate decayed linearly to 1e-4; not a setting of the paper.",
            hyperparameters={"weight_quantization": 5.0, "final_learning_rate": 1e-4},
            epochs=10, batch_size=500,
            selected_on="validation queries: REPRODUCTION.md#preset-sigah-ann"),
        itq_start=Preset(
            description="Training starts from ITQ's codes (W = PCA + ITQ rotation, projections of spread 3) and "
                        "refines "
                        "them with Eq. 20 by plain SGD (lr 1e-2 decayed to 1e-4) after the generator has learned to "
                        "decode them for half of training; graph weight 1 and reconstruction weight 0.1 so the "
                        "neighbour term leads. Not a setting of the paper.",
            hyperparameters={"hash_init": "itq", "init_scale": 3.0, "hash_warmup_fraction": 0.5,
                             "optimizer_type": "sgd", "learning_rate": 1e-2, "final_learning_rate": 1e-4,
                             "weight_quantization": 5.0, "weight_graph": 1.0, "weight_reconstruction": 0.1},
            epochs=10, batch_size=500,
            selected_on="validation queries: REPRODUCTION.md#preset-sigah-itq-start"),
    )
    default_preset = "itq_start"

    hyperparameter_rules = {
        "sparse_units": settings.Optional(settings.PositiveInt()), "discriminator_units": settings.PositiveInt(),
        **{name: settings.NonNegative() for name in (
            "weight_reconstruction", "weight_quantization", "weight_sparsity", "weight_graph", "weight_adversarial",
            "margin", "learning_rate", "weight_decay", "leaky_slope")},
        "graph_sigma": settings.Optional(settings.Positive()),
        "reconstruction_loss": settings.Choice(RECONSTRUCTION_LOSSES),
        "generator_input": settings.Choice(GENERATOR_INPUTS),
        "quantization_sign": settings.Choice(QUANTIZATION_SIGNS), "sparsity_norm": settings.Choice(SPARSITY_NORMS),
        "standardize": settings.Choice(STANDARDIZE), "optimizer_type": settings.Choice(OPTIMIZERS),
        "final_learning_rate": settings.Optional(settings.NonNegative()), "hash_init": settings.Choice(HASH_INITS),
        "init_scale": settings.Positive(), "hash_warmup_fraction": settings.Fraction(),
    }

    def __init__(self, bits=32, input_shape=None, seed=0, sparse_units=None, discriminator_units=50,
                 weight_reconstruction=1.0, weight_quantization=1e-3, weight_sparsity=1e-4, weight_graph=1e-4,
                 weight_adversarial=1.0, margin=0.1, graph_sigma=None, reconstruction_loss="norm",
                 generator_input="relaxed", quantization_sign="bound", sparsity_norm="l2", standardize="global",
                 optimizer_type="adam", learning_rate=1e-2, final_learning_rate=None, weight_decay=5e-4,
                 leaky_slope=0.2, hash_init="gaussian", init_scale=1.0, hash_warmup_fraction=0.0, **kwargs):
        super().__init__(bits=bits, input_shape=input_shape, seed=seed, **kwargs)
        d = int(np.prod(self.item_shape))
        if self.hash_init != "gaussian" and self.bits > d:
            raise ValueError(f"`hash_init={self.hash_init!r}` needs `bits` at most the feature dimension ({d}), got "
                             f"bits={self.bits}; use hash_init='gaussian' (or preset='paper').")
        m = self.sparse_units or 2 * d
        # Sec. 4: "all the weight parameters are initialized as random Gaussian matrices".
        gaussian = lambda fan_in: keras.initializers.RandomNormal(stddev=1.0 / math.sqrt(fan_in), seed=self.seed)  # noqa: E731
        self.standardizer = Standardize(d, name="standardize", dtype=OUTPUT_DTYPE)
        self.hash_layer = keras.layers.Dense(self.bits, activation="tanh", use_bias=False,
                                             kernel_initializer=gaussian(d), name="hash_function", dtype=OUTPUT_DTYPE)
        self.sparse_layer = keras.layers.Dense(m, kernel_initializer=gaussian(self.bits), name="sparse_generator",
                                               dtype=OUTPUT_DTYPE)
        # Psi ~ N(0, 1/d), fixed: a non-trainable weight drawn from the seed, so checkpoints and exports keep it.
        psi = np.random.default_rng(self.seed).normal(0.0, 1.0 / math.sqrt(d), size=(m, d)).astype(np.float32)
        self.psi = self.add_weight(shape=(m, d), initializer=keras.initializers.Constant(psi), trainable=False,
                                   name="psi")
        self.discriminator = keras.Sequential([
            keras.Input((d,)),
            keras.layers.Dense(self.discriminator_units, activation="relu", kernel_initializer=gaussian(d)),
            keras.layers.Dense(d, kernel_initializer=gaussian(self.discriminator_units), dtype=OUTPUT_DTYPE),
        ], name="discriminator")
        sample = keras.ops.zeros((1, d))
        self.sparse_layer(self.hash_layer(self.standardizer(sample)))

    # --- networks ------------------------------------------------------------------------------

    def adapt(self, x: Any, y: Any = None) -> None:
        """Fits the feature standardisation and, with ``hash_init`` ``"pca"`` / ``"itq"``, the initial hash
        function on the training items (numpy / memory-mapped arrays or a batched dataset); labels are not
        used."""
        if x is None:
            return
        if self.standardize is not None:
            mean, scale = feature_statistics(x, self.standardize)
            self.standardizer.mean.assign(mean)
            self.standardizer.scale.assign(scale)
        if self.hash_init == "gaussian":
            return
        from tfhash import baselines  # the linear methods whose codes training starts from

        sample = _first_rows(x, INIT_SAMPLE)
        standardized = self.standardizer(sample.astype(np.float32)).numpy().astype(np.float64)
        linear = baselines.get("itq" if self.hash_init == "itq" else "pcah")(bits=self.bits, seed=self.seed)
        linear.fit(standardized)
        projection = linear.projection_
        spread = (standardized - linear.mean_) @ projection
        projection = projection * (self.init_scale / np.maximum(spread.std(axis=0), 1e-12))
        self.hash_layer.kernel.assign(projection.astype(np.float32))

    def encode_graph(self, inputs: tf.Tensor) -> tf.Tensor:
        return self.hash_layer(self.standardizer(inputs))

    def _generate(self, codes):
        sparse = keras.activations.leaky_relu(self.sparse_layer(codes), negative_slope=self.leaky_slope)
        return sparse, tf.matmul(sparse, self.psi)

    def _energy(self, x):
        """Per-item energy D(x): the auto-encoder's mean squared reconstruction error."""
        return losses.energy(self.discriminator(x), x)

    # --- optimisation --------------------------------------------------------------------------

    def players(self) -> dict:
        # The hash function and the generator minimise the same loss (Eq. 20); separate players keep the
        # exported encoder (standardisation + hash function) apart from the generator.
        return {"discriminator": self.discriminator.trainable_variables,
                "hash_function": self.hash_layer.trainable_variables,
                "generator": self.sparse_layer.trainable_variables}

    def default_optimizer(self, player: str, total_steps: int | None) -> keras.optimizers.Optimizer:
        learning_rate = self.learning_rate
        if self.final_learning_rate is not None and total_steps:  # the paper keeps it constant (Sec. 4)
            learning_rate = keras.optimizers.schedules.PolynomialDecay(
                self.learning_rate, total_steps, self.final_learning_rate, power=1.0)
        if self.optimizer_type == "sgd":
            return keras.optimizers.SGD(learning_rate, weight_decay=self.weight_decay or None, name=f"{player}_sgd")
        return keras.optimizers.AdamW(learning_rate, weight_decay=self.weight_decay, name=f"{player}_adamw")

    # --- training ------------------------------------------------------------------------------

    def _discriminator_step(self, x, reconstruction, average):
        """Margin loss of Eq. 21 on real features and the reconstructions; per-item loss and energies for the logs.

        Without the adversarial term (Table 4's ablation) D cannot reach the codes: it is not trained.
        """
        with tf.GradientTape() as tape:
            energy_real = self._energy(x)
            energy_fake = self._energy(tf.stop_gradient(reconstruction))
            d_per_item = losses.energy_margin(energy_real, energy_fake, self.margin)
            d_loss = average(d_per_item)
        if self.weight_adversarial > 0:
            self.minimise(tape, d_loss, "discriminator")
        return d_per_item, energy_real, energy_fake

    def _apply_hash_and_generator(self, tape, g_loss):
        """One step of W and G on ``g_loss``; W is held during the hash warm-up."""
        warmup_steps = int(self.hash_warmup_fraction * self.total_steps) if self.total_steps else 0
        warm = None
        if warmup_steps:
            # A random generator's gradients would first scatter a PCA / ITQ start: hold W until it decodes.
            warm = tf.cast(self.scheme_optimizers["generator"].iterations >= warmup_steps, tf.float32)
        # The tape is persistent: each player's gradients start from its own loss scale (mixed precision).
        self.minimise(tape, g_loss, "hash_function", scale=warm)
        self.minimise(tape, g_loss, "generator")

    def train_step(self, data: Any) -> dict:
        x, _, _ = distribution.unpack_batch(data)  # unsupervised: labels are never used
        x = self.standardizer(x)
        step_context = distribution.step_context(x)
        replicas, average = step_context.replicas, step_context.average

        similarity = losses.heat_kernel_similarity(x, self.graph_sigma) if self.weight_graph > 0 else None
        with tf.GradientTape(persistent=True) as tape:
            codes = self.hash_layer(x)
            generator_input = codes
            if self.generator_input == "straight_through":  # binary codes forward, tanh gradient backward
                generator_input = codes + tf.stop_gradient(tf.where(codes >= 0.0, 1.0, -1.0) - codes)
            sparse, reconstruction = self._generate(generator_input)

            with tape.stop_recording():  # 1. the discriminator, on the current reconstructions
                d_per_item, energy_real, energy_fake = self._discriminator_step(x, reconstruction, average)

            # 2. Hash function + generator: Eq. 20 plus the EBGAN generator term D(x^), with the updated D.
            reconstruction_error = losses.reconstruction_error(reconstruction, x, self.reconstruction_loss)
            quantization = losses.quantization(codes, self.quantization_sign)
            sparsity = losses.sparsity(sparse, self.sparsity_norm)
            graph = losses.graph_smoothness(similarity, codes) if similarity is not None else tf.constant(0.0)
            adversarial = self._energy(reconstruction)
            g_loss = (average(self.weight_reconstruction * reconstruction_error
                              + self.weight_quantization * quantization
                              + self.weight_sparsity * sparsity
                              + self.weight_adversarial * adversarial)
                      + self.weight_graph * graph / replicas)
        self._apply_hash_and_generator(tape, g_loss)

        return self.update_trackers({
            "d_loss": tf.reduce_mean(d_per_item), "g_loss": g_loss * replicas,
            "reconstruction": tf.reduce_mean(reconstruction_error), "quantization": tf.reduce_mean(quantization),
            "sparsity": tf.reduce_mean(sparsity), "graph": graph,
            "energy_real": tf.reduce_mean(energy_real), "energy_fake": tf.reduce_mean(energy_fake),
            **distribution.code_statistics(codes, self.threshold),
        })
