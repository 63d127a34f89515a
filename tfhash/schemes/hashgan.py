"""HashGAN: unsupervised deep generative adversarial hashing (Ghasedi Dizaji et al., CVPR 2018).

Three networks (Sec. 3.1): a generator G on [uniform noise z', random bits b'], and a discriminator D
and encoder E that share every layer but their last (D: one logit; E: K sigmoids).

One training step = a D/E update then a G update (Sec. 3.2, last paragraph):

1. D/E: adversarial loss (Eq. 2) + hashing loss on real images (Eq. 3: minimum-entropy bits,
   uniform-frequency bits, consistent bits under a transform, independent bits) + collaborative
   loss 0.1 * ||E(G(z)) - b'||^2 on synthetic images (Eq. 4). Hashing and collaborative terms are
   off for the first tenth of training (Sec. 4).
2. G: feature matching on the last hidden layer of D/E (Eq. 5).

Choices where the paper is open (each an argument):

* Eq. 3 sums over the N images; literal sums make the weights depend on the batch size. Per-image
  terms are averaged over the batch here (each term is "per image", summed over bits).
* The frequency f_k and the feature means of Eq. 5 are taken over the *global* batch under any
  ``tf.distribute`` strategy; gradients reach each replica's own examples.
* ``consistency_transform="adversarial"`` (not in the paper) perturbs each item by ``adversarial_epsilon``
  in L2 (``adversarial_radius="fixed"``), or, as IMSAT does, by ``adversarial_epsilon`` times the item's
  distance to its ``radius_neighbour``-th nearest training item (``"neighbour"``), so dense and sparse
  regions of the data get perturbations of their own scale. The distance is measured in the training
  step against a bank of at most 4,096 training items kept by ``adapt``, with the neighbour rank scaled to
  the bank's share of the training set (rank 10 of 9,000 items is rank 5 of a 4,096-item bank).
* The encoder's last layer is a plain dense layer, so the independence term acts on its real
  kernel W (K x K Gram matrix W^T W); the shared trunk and D's head use weight normalisation.
* **Backbone** (photos; the paper hashes raw pixels). With ``backbone=``, G, D and E work in the frozen
  backbone's feature space: each feature scaled to [0, 1] by the training items' range, G generating feature
  vectors, D/E (the MLP pair) judging and encoding them, the consistency transform the noise one. The images
  pass the backbone once per fit (``tfhash.fit``) and before E in ``encode`` and the export. Without a
  backbone, a colour image above 32x32 pixels (a grey one above 64x64) is seen as a 32x32 copy averaged over
  blocks of pixels, which G, D and E are sized for.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfhash import _validation, augment, distribution, losses, stateless
from tfhash.encoding import item_chunks
from tfhash.schemes import backbones, settings
from tfhash.schemes.base import HashingScheme, SchemeSpec
from tfhash.schemes.layers import NETWORKS, OUTPUT_DTYPE, WeightNormConv2D, WeightNormDense, batch_norm, choose_network
from tfhash.schemes.presets import Preset, named
from tfhash.schemes.registry import register

TRANSFORMS = ("auto", "noise", "affine", "translate_flip", "augment", "adversarial")
RADII = ("fixed", "neighbour")
RADIUS_BANK = 4096  # training items the per-item radius is measured against


@register("hashgan")
class HashGAN(HashingScheme):
    """HashGAN (CVPR 2018). Loss weights default to the paper's values (Sec. 4); 0 switches a term off.

    Args:
        bits: code length K.
        input_shape: one item's shape; images in [0, 1].
        seed: seeds initialisation and all training noise.
        network: ``"auto"``, ``"mlp"`` (Improved-GAN MNIST pair) or ``"conv"`` (Improved-GAN CIFAR pair).
        backbone: ``None``, the name of a ``keras.applications`` model (``backbones.APPLICATIONS``) or a
            ``keras.Model`` mapping images to ``[n, d]``: G, D and E work on its features instead of the pixels
            (see "Backbone" above).
        backbone_weights: ``None`` or ``"imagenet"`` (a named backbone's pretrained weights, downloaded by Keras).
        train_backbone: ``None`` or ``False``: the backbone stays fixed (the feature space the GAN works in).
        noise_dim: length of the uniform noise z' (Sec. 3.2: z' ~ U(0, 1)).
        input_noise: std of the Gaussian noise on D/E inputs (Sec. 4: 0.15).
        hidden_noise: std of the Gaussian noise after each hidden D/E layer (Improved-GAN MNIST uses
            0.5; the HashGAN paper only mentions input noise, hence 0 by default).
        weight_adversarial, weight_entropy, weight_frequency, weight_consistency, weight_independence,
        weight_collaborative, weight_feature_matching: loss weights (Sec. 4: 1, lambda in
            {1e-3, 1e-2}, 1, 1, 1, 0.1, 1).
        consistency_transform: ``"auto"`` (noise for grey/flat inputs, translation + flip for colour),
            ``"noise"``, ``"affine"`` (small random shifts and rotations), ``"translate_flip"``,
            ``"augment"`` (:func:`tfhash.augment.augment`: shift, rotation and zoom of grey images, crop, flip
            and colour jitter of colour ones; ``max_shift``, ``max_rotation``, ``max_zoom``) or
            ``"adversarial"`` (the perturbation of L2 norm ``adversarial_epsilon`` that changes the codes
            most, found by one power iteration as in virtual adversarial training, Miyato et al. 2018;
            IMSAT, Hu et al. 2017, pairs it with the same entropy terms). Not in the HashGAN paper.
        transform_noise: std of the noise transform.
        max_shift: pixels of random translation for the image transforms.
        max_rotation: degrees of random rotation for ``"affine"`` and ``"augment"``.
        max_zoom: largest relative zoom of ``"augment"`` on grey images.
        adversarial_epsilon: L2 radius of the ``"adversarial"`` perturbation (per item), or, with
            ``adversarial_radius="neighbour"``, its multiple of the item's neighbour distance.
        adversarial_radius: ``"fixed"`` or ``"neighbour"`` (see the module docstring).
        radius_neighbour: the neighbour rank t of the ``"neighbour"`` radius (IMSAT: 10).
        warmup_fraction: fraction of training with hashing and collaborative losses off (Sec. 4: 0.1).
        learning_rate, final_learning_rate: Adam learning rate, decayed linearly (Sec. 4: 9e-4 -> 3e-4).
    """

    loss_names = ("d_loss", "g_loss", "entropy", "balance", "consistency", "independence", "collab",
                  "bit_freq_min", "bit_freq_max")
    input_kind = "images"
    adapt_on_resume = True  # the radius bank of adversarial_radius="neighbour" is kept again, never checkpointed
    spec = SchemeSpec(
        encoder_players=("discriminator",),  # E shares every layer of D but the last (Sec. 3.1)
        paper_baselines=("lsh", "pcah", "itq", "sph", "sh"),  # Table 1
        # Fig. 5: one term removed at a time; the adversarial loss goes with feature matching and L2.
        ablations={
            "-independence": {"weight_independence": 0.0},
            "-collaborative (L2)": {"weight_collaborative": 0.0},
            "-consistency": {"weight_consistency": 0.0},
            "-uniform frequency": {"weight_frequency": 0.0},
            "-entropy": {"weight_entropy": 0.0},
            "-adversarial -feature -L2": {"weight_adversarial": 0.0, "weight_feature_matching": 0.0,
                                          "weight_collaborative": 0.0},
        },
    )
    presets = named(
        paper=Preset(
            description="The paper's settings (Sec. 4): loss weights 1 / lambda_entropy 1e-2 / 0.1 for L2, noise as "
                        "the consistency transform of grey images, Adam(0.5, 0.999) with the learning rate decayed "
                        "linearly from 9e-4 to 3e-4, hashing losses off for the first tenth of training. The paper "
                        "states neither epochs nor batch size; 100 images per batch follows the Improved-GAN code "
                        "it builds on. These are the constructor defaults.",
            epochs=100, batch_size=100, selected_on="paper (Sec. 4)"),
        vat=Preset(
            description="Consistency under virtual-adversarial perturbations of L2 radius 3 (Miyato et al. 2018) "
                        "with IMSAT's ratio of entropy terms (H(Y|X) weight 0.1, marginal entropy 4x that; Hu et "
                        "al. 2017); everything else as in the paper. Not a setting of the HashGAN paper.",
            hyperparameters={"consistency_transform": "adversarial", "adversarial_epsilon": 3.0,
                             "weight_entropy": 0.1, "weight_frequency": 0.4},
            epochs=30, batch_size=100,
            selected_on="validation queries: REPRODUCTION.md#preset-hashgan-vat"),
    )

    hyperparameter_rules = {
        **backbones.RULES,
        "network": settings.Choice(NETWORKS), "noise_dim": settings.PositiveInt(),
        **{name: settings.NonNegative() for name in (
            "input_noise", "hidden_noise", "weight_adversarial", "weight_entropy", "weight_frequency",
            "weight_consistency", "weight_independence", "weight_collaborative", "weight_feature_matching",
            "transform_noise", "max_rotation", "adversarial_epsilon", "learning_rate", "final_learning_rate")},
        "consistency_transform": settings.Choice(TRANSFORMS), "max_shift": settings.Integer(),
        "max_zoom": settings.Fraction(), "adversarial_radius": settings.Choice(RADII),
        "radius_neighbour": settings.PositiveInt(), "warmup_fraction": settings.Fraction(),
    }

    @classmethod
    def check_combination(cls, hyperparameters: dict) -> None:
        backbones.check_fixed_backbone(hyperparameters, "HashGAN")

    def __init__(self, bits=32, input_shape=None, seed=0, network="auto", noise_dim=100, input_noise=0.15,
                 hidden_noise=0.0, weight_adversarial=1.0, weight_entropy=1e-2, weight_frequency=1.0,
                 weight_consistency=1.0, weight_independence=1.0, weight_collaborative=0.1,
                 weight_feature_matching=1.0, consistency_transform="auto", transform_noise=0.3,
                 max_shift=2, max_rotation=10.0, max_zoom=0.1, adversarial_epsilon=2.0, adversarial_radius="fixed",
                 radius_neighbour=10, warmup_fraction=0.1, learning_rate=9e-4,
                 final_learning_rate=3e-4, backbone=None, backbone_weights=None,
                 train_backbone=None, **kwargs):
        super().__init__(bits=bits, input_shape=input_shape, seed=seed, **kwargs)
        self._radius_bank, self._bank_centre, self._bank_rank = None, None, None
        self._on_backbone_features()  # with a backbone, the networks below take its features
        self._build_networks()

    # --- networks ------------------------------------------------------------------------------

    def _build_networks(self):
        self.network_kind = choose_network(self.network_shape, self.network, scheme="HashGAN",
                                           mlp_max_pixels=64 * 64)
        transform = self.consistency_transform
        if transform == "auto":
            colour = len(self.network_shape) == 3 and self.network_shape[-1] == 3
            transform = "translate_flip" if colour else "noise"
        if transform in ("affine", "translate_flip", "augment") and len(self.network_shape) != 3:
            raise ValueError(f"`consistency_transform`={transform!r} needs images [h, w, c], got items of "
                             f"shape {self.network_shape}; use 'noise'.")
        self.transform_kind = transform
        lrelu = lambda t: keras.activations.leaky_relu(t, negative_slope=0.2)  # noqa: E731
        if self.network_kind == "mlp":
            # Improved-GAN MNIST discriminator: 1000-500-250-250-250 with weight normalisation.
            self.trunk_layers = [keras.layers.Flatten()] + [
                WeightNormDense(units, activation=lrelu, name=f"trunk_dense_{i}")
                for i, units in enumerate((1000, 500, 250, 250, 250))]
            size = int(np.prod(self.network_shape))
            self.generator = keras.Sequential([
                keras.Input((self.noise_dim + self.bits,)),
                keras.layers.Dense(500, activation="softplus"), batch_norm(),
                keras.layers.Dense(500, activation="softplus"), batch_norm(),
                WeightNormDense(size, activation="sigmoid", dtype=OUTPUT_DTYPE),
                keras.layers.Reshape(self.network_shape, dtype=OUTPUT_DTYPE),
            ], name="generator")
        else:
            # Improved-GAN CIFAR-10 discriminator (strided convolutions, no pooling but the last).
            spec = [(96, 3, 1), (96, 3, 1), (96, 3, 2), (192, 3, 1), (192, 3, 1), (192, 3, 2)]
            self.trunk_layers = [WeightNormConv2D(f, k, s, activation=lrelu, name=f"trunk_conv_{i}")
                                 for i, (f, k, s) in enumerate(spec)]
            self.trunk_layers += [WeightNormConv2D(192, 3, 1, padding="valid", activation=lrelu, name="trunk_conv_6"),
                                  WeightNormConv2D(192, 1, 1, activation=lrelu, name="trunk_conv_7"),
                                  WeightNormConv2D(192, 1, 1, activation=lrelu, name="trunk_conv_8"),
                                  keras.layers.GlobalAveragePooling2D()]
            channels = self.network_shape[-1]
            self.generator = keras.Sequential([
                keras.Input((self.noise_dim + self.bits,)),
                keras.layers.Dense(4 * 4 * 512), batch_norm(), keras.layers.ReLU(),
                keras.layers.Reshape((4, 4, 512)),
                keras.layers.Conv2DTranspose(256, 5, strides=2, padding="same"),
                batch_norm(), keras.layers.ReLU(),
                keras.layers.Conv2DTranspose(128, 5, strides=2, padding="same"),
                batch_norm(), keras.layers.ReLU(),
                keras.layers.Conv2DTranspose(channels, 5, strides=2, padding="same", activation="sigmoid",
                                             dtype=OUTPUT_DTYPE),
            ], name="generator")
        self.discriminator_head = WeightNormDense(1, name="discriminator_head", dtype=OUTPUT_DTYPE)
        self.encoder_head = keras.layers.Dense(self.bits, activation="sigmoid", name="encoder_head", dtype=OUTPUT_DTYPE)
        features = self._features(keras.ops.zeros((1,) + self.network_shape))
        self.discriminator_head(features)
        self.encoder_head(features)

    def _features(self, x, seed=None):
        """Last hidden layer F of D/E; with a ``seed``, the training-time Gaussian noise is added."""
        h = x
        if seed is not None and self.input_noise > 0:
            h = h + self.input_noise * distribution.batch_random(stateless.normal, tf.shape(h), seed)
        for i, layer in enumerate(self.trunk_layers):
            h = layer(h)
            if seed is not None and self.hidden_noise > 0 and not isinstance(layer, keras.layers.Flatten):
                h = h + self.hidden_noise * distribution.batch_random(stateless.normal, tf.shape(h),
                                                              seed + [0, 7919 * (i + 1)], dtype=h.dtype)
        return keras.ops.cast(h, "float32")  # feature matching and the heads read F in float32

    def encode_graph(self, inputs: tf.Tensor) -> tf.Tensor:
        return self.encoder_head(self._features(inputs))

    def generate(self, noise: tf.Tensor, bits01: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Synthetic images from uniform noise ``[n, noise_dim]`` and bits ``[n, bits]``."""
        return self.generator(tf.concat([noise, tf.cast(bits01, noise.dtype)], axis=-1), training=training)

    def sample_images(self, count: int, seed: int = 0) -> np.ndarray | None:
        if len(self.network_shape) not in (2, 3):
            return None  # flat feature vectors are not images
        count = _validation.check_positive_int(count, "count")
        noise, bits01 = self._sample_generator_inputs(count, tf.constant([int(seed), 0], tf.int64))
        images = self.generate(noise, bits01, training=False).numpy()
        return images if images.ndim == 4 else images[..., None]

    def adapt(self, x: Any, y: Any = None) -> None:
        """Keeps the bank of training items that per-item perturbation radii are measured against
        (``adversarial_radius="neighbour"`` only); labels are not used."""
        if self.transform_kind != "adversarial" or self.adversarial_radius != "neighbour" or x is None:
            return
        bank, count = [], 0
        for batch in item_chunks(x):
            batch = batch.astype(np.float32).reshape(len(batch), -1)
            if count < RADIUS_BANK:
                bank.append(batch[:RADIUS_BANK - count])
            count += len(batch)
        if count <= self.radius_neighbour:
            raise ValueError(f"`radius_neighbour` must be smaller than the number of training items ({count}), got "
                             f"{self.radius_neighbour}.")
        bank = np.concatenate(bank)
        # Distances are taken about the bank's mean: they do not change, and the float32 expansion below loses
        # less to cancellation on small norms than on large ones.
        self._bank_centre = tf.constant(bank.mean(0, dtype=np.float64).astype(np.float32))
        self._radius_bank = tf.constant(bank - self._bank_centre.numpy())
        # Rank t among n items is about rank t * m / n among m of them drawn alike.
        self._bank_rank = max(1, min(len(bank) - 1, round(self.radius_neighbour * len(bank) / count)))

    def _neighbour_radius(self, x):
        """Per-item radius ``[b]``: adversarial_epsilon x the distance to the item's t-th neighbour in the bank
        (zero distances, the item itself or its duplicates, are skipped)."""
        if self._radius_bank is None:
            raise ValueError("adversarial_radius='neighbour' measures radii against training items kept by "
                             "adapt(x); tfhash.fit calls it before training.")
        flat = tf.reshape(x, [tf.shape(x)[0], -1]) - self._bank_centre
        norms = tf.reduce_sum(tf.square(flat), 1, keepdims=True) + tf.reduce_sum(tf.square(self._radius_bank), 1)
        squared = norms - 2.0 * tf.matmul(flat, self._radius_bank, transpose_b=True)
        # In float32 an item's squared distance to itself comes out as a small multiple of the norms' rounding
        # (how small depends on the processor's kernels), not 0: anything within 1e-4 of the norms is a zero.
        squared = tf.where(squared <= 1e-4 * norms, tf.constant(np.inf, squared.dtype), squared)
        nearest = -tf.math.top_k(-squared, k=self._bank_rank).values
        return self.adversarial_epsilon * tf.sqrt(tf.maximum(nearest[:, -1], 0.0))

    # --- optimisation --------------------------------------------------------------------------

    def players(self) -> dict:
        shared = [v for layer in self.trunk_layers for v in layer.trainable_variables]
        return {
            "discriminator": (shared + self.discriminator_head.trainable_variables
                              + self.encoder_head.trainable_variables),
            "generator": self.generator.trainable_variables,
        }

    def default_optimizer(self, player: str, total_steps: int | None) -> keras.optimizers.Optimizer:
        # Sec. 4: Adam(beta1=0.5, beta2=0.999, eps=1e-8), lr 9e-4 decayed linearly to 3e-4.
        learning_rate = self.learning_rate
        if total_steps:
            learning_rate = keras.optimizers.schedules.PolynomialDecay(
                self.learning_rate, total_steps, self.final_learning_rate, power=1.0)
        return keras.optimizers.Adam(learning_rate, beta_1=0.5, beta_2=0.999, epsilon=1e-8, name=f"{player}_adam")

    # --- training ------------------------------------------------------------------------------

    def _adversarial_copy(self, x, seed):
        """x + r, with r (||r|| = epsilon per item) the direction that most changes the codes (VAT)."""
        def normalise(d):
            axes = list(range(1, len(self.network_shape) + 1))
            return d / (tf.sqrt(tf.reduce_sum(tf.square(d), axis=axes, keepdims=True)) + 1e-12)

        codes = tf.stop_gradient(self.encoder_head(self._features(x)))
        probe = 1e-6 * normalise(distribution.batch_random(stateless.normal, tf.shape(x), seed))
        with tf.GradientTape() as tape:
            tape.watch(probe)
            moved = self.encoder_head(self._features(x + probe))
            divergence = tf.reduce_sum(losses.consistency(codes, moved))
        direction = tf.stop_gradient(tape.gradient(divergence, probe))
        if self.adversarial_radius == "neighbour":
            radius = tf.reshape(self._neighbour_radius(x), [-1] + [1] * len(self.network_shape))
            return x + radius * normalise(direction)
        return x + self.adversarial_epsilon * normalise(direction)

    def _transform(self, x, seed):
        """The transformed copy x~ of Eq. 3 (consistent bits)."""
        if self.transform_kind == "adversarial":
            return self._adversarial_copy(x, seed)
        if self.transform_kind == "noise":
            noise = distribution.batch_random(stateless.normal, tf.shape(x), seed)
            return tf.clip_by_value(x + self.transform_noise * noise, 0.0, 1.0)
        if self.transform_kind == "augment":
            policy = augment.Policy(max_shift=self.max_shift, max_rotation=self.max_rotation, max_zoom=self.max_zoom,
                                    padding=self.max_shift)
            return augment.augment(x, seed, policy, draw=distribution.batch_random)
        if self.transform_kind == "affine":
            return augment.affine(x, seed, max_shift=self.max_shift, max_rotation=self.max_rotation, max_zoom=0.0,
                                  draw=distribution.batch_random)
        return augment.crop_and_flip(x, seed, padding=self.max_shift, draw=distribution.batch_random)

    def _sample_generator_inputs(self, batch, seed):
        noise = distribution.batch_random(stateless.uniform, [batch, self.noise_dim], seed)  # z' ~ U(0, 1)
        bits01 = tf.cast(distribution.batch_random(stateless.uniform, [batch, self.bits], seed + [0, 1]) < 0.5,
                         tf.float32)  # b'
        return noise, bits01

    def _generator_step(self, real_features, step, local_batch):
        """The G step: feature matching against the real batch's features (Eq. 5); returns its loss."""
        if self.weight_feature_matching <= 0 or self.weight_adversarial <= 0:
            return tf.constant(0.0)
        noise, generator_bits = self._sample_generator_inputs(local_batch, self._stateless_seed(step, 6))
        real_mean = tf.stop_gradient(distribution.global_batch_mean(real_features))
        with tf.GradientTape() as tape:
            fake = self.generate(noise, generator_bits, training=True)
            fake_mean = distribution.global_batch_mean(self._features(fake, self._stateless_seed(step, 7)))
            g_loss = self.weight_feature_matching * losses.feature_matching(real_mean, fake_mean)
        self.minimise(tape, g_loss, "generator")
        return g_loss

    def train_step(self, data: Any) -> dict:
        x, _, _ = self._step_inputs(data)  # unsupervised: labels are never used
        x = tf.cast(x, tf.float32)
        step_context = distribution.step_context(x)
        local_batch, average = step_context.local_batch, step_context.average
        step = self.scheme_optimizers["discriminator"].iterations
        warmup_steps = int(self.warmup_fraction * self.total_steps) if self.total_steps else 0
        warm = tf.cast(step >= warmup_steps, tf.float32)  # the hashing terms wait for D to learn features
        # 1. D/E step; 2. the G step (_generator_step).
        noise, target_bits = self._sample_generator_inputs(local_batch, self._stateless_seed(step, 1))
        fake = tf.stop_gradient(self.generate(noise, target_bits, training=True))
        transformed = self._transform(x, self._stateless_seed(step, 2))
        with tf.GradientTape() as tape:
            real_features = self._features(x, self._stateless_seed(step, 3))
            fake_features = self._features(fake, self._stateless_seed(step, 4))
            real_codes = self.encoder_head(real_features)
            fake_codes = self.encoder_head(fake_features)
            transformed_codes = self.encoder_head(self._features(transformed, self._stateless_seed(step, 5)))
            adversarial = losses.discriminator_cross_entropy(self.discriminator_head(real_features),
                                                             self.discriminator_head(fake_features))
            entropy = losses.bit_entropy(real_codes)
            frequencies = distribution.global_batch_mean(real_codes)
            balance = losses.negative_frequency_entropy(frequencies)  # global statistic: scale 1
            consistency = losses.consistency(real_codes, transformed_codes)
            independence = losses.independence(self.encoder_head.kernel)
            collaborative = losses.collaborative(fake_codes, target_bits)
            hashing = (self.weight_entropy * average(entropy) + self.weight_frequency * balance
                       + self.weight_consistency * average(consistency)
                       + self.weight_independence * independence / step_context.replicas)
            total = (self.weight_adversarial * average(adversarial)
                     + warm * (hashing + self.weight_collaborative * average(collaborative)))
        self.minimise(tape, total, "discriminator")

        g_loss = self._generator_step(real_features, step, local_batch)
        return self.update_trackers({
            "d_loss": tf.reduce_mean(adversarial), "g_loss": g_loss, "entropy": tf.reduce_mean(entropy),
            "balance": balance, "consistency": tf.reduce_mean(consistency), "independence": independence,
            "collab": tf.reduce_mean(collaborative), **distribution.code_statistics(real_codes, self.threshold),
        })
