"""BGAN: binary generative adversarial networks for image retrieval (Song et al., AAAI 2018).

An encoder and a hash layer give each image a code; a generator reconstructs the image *from the code*
and a discriminator tells real images from reconstructions. The codes must reproduce a neighbourhood
structure S mined once from the training set (``tfhash.neighbours``, Alg. 1), and the hash layer's
activation app(beta z) is sharpened towards sign(z) in stages (continuation, Sec. 3.2.2 and 3.4), so
the trained network outputs binary codes without a separate quantisation step.

Choices where the paper is silent or ambiguous (each an option):

* **Networks.** The paper's encoder is VGG19-like (Table 1), for 224x224 inputs with pretrained
  features. Here the encoder is an MLP for flat or small grey images and a small VGG-style conv net for
  32x32 colour; the generator and discriminator follow Sec. 3.2.3, with the generator's first feature map
  at a quarter of the image size (the paper's 8x8 for 32x32) and ``width`` scaling every channel count.
* **Loss normalisation.** Eq. 10 sums over all pairs and Eq. 11-12 over pixels; here each term is a mean
  (over the batch's ordered pairs, pixels, features), so lambda1 = lambda2 = 0.1 weigh terms of one scale.
* **Generator's adversarial term.** Eq. 19 has G minimise l_A = log D(x) + log(1 - D(x^R)) -- the
  saturating form (``generator_loss="minimax"``, the ``paper`` preset); ``"non_saturating"`` minimises
  -log D(x^R) instead.
* **The beta schedule.** "Increase beta after convergence; beta = 10 is enough": ``beta_stages`` splits
  training into equal parts, one per value (default 1, 2, 5, 10). One stage at beta = 1 is the two-step
  variant of Table 4 (relaxed training, sign after).
* **The graph's features.** The paper ranks neighbours on ImageNet CNN features, which cannot be
  downloaded offline: ``graph_features`` is raw pixels by default, or ``"pca"``, a precomputed array
  ``[n, d]`` or a ``keras.Model`` feature extractor (the paper's choice is one argument away).
* **Backbone** (photos). With ``backbone=`` (e.g. ``"vgg16"`` with ``backbone_weights="imagenet"``, the paper's
  features), the encoder, generator and discriminator work in the frozen backbone's feature space, each
  feature scaled to [0, 1] by the training items' range: the generator reconstructs the features from the code,
  the discriminator judges features, and the graph ranks neighbours on them (``graph_features="pixels"``
  then means the features). The images pass the backbone once per fit and before the encoder in ``encode``
  and the export. Without a backbone, a colour image above 32x32 pixels (a grey one above 64x64) is seen
  as a 32x32 copy averaged over blocks of pixels, which the networks are sized for.
"""

from __future__ import annotations

import hashlib
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfhash import _validation, distribution, losses, neighbours
from tfhash import codes as codes_lib
from tfhash.schemes import backbones, settings
from tfhash.schemes.base import HashingScheme, SchemeSpec
from tfhash.schemes.layers import NETWORKS, OPTIMIZERS, OUTPUT_DTYPE, batch_norm, choose_network
from tfhash.schemes.presets import Preset, named
from tfhash.schemes.registry import register

ACTIVATIONS = ("app", "tanh")
GRAPH_FEATURE_KINDS = ("pixels", "pca")


def describe_graph_features(value: Any) -> str:
    """What a checkpoint records of ``graph_features``: the name, or a fingerprint of an array / model."""
    if isinstance(value, str):
        return value
    if isinstance(value, keras.Model):
        return f"model {value.name}"
    array = np.ascontiguousarray(value)
    digest = hashlib.sha1(array.view(np.uint8).ravel()[: 1 << 24]).hexdigest()[:12]
    return f"array {list(array.shape)} {array.dtype} sha1:{digest}"


def _lower_bound(sorted_keys, queries):
    """First position of each query in ``sorted_keys`` (capped at the last), as ``tf.searchsorted`` gives it.

    A binary search of a fixed number of gathers: its memory follows the queries. XLA lowers
    ``tf.searchsorted`` to a comparison of every query with every key, which for the neighbourhood graph's
    pairs asked for over 100 GiB.
    """
    size = int(sorted_keys.shape[0])
    low = tf.zeros_like(queries)
    high = tf.fill(tf.shape(queries), tf.constant(size, queries.dtype))
    for _ in range(max(1, size).bit_length()):
        middle = (low + high) // 2
        active = low < high
        right = tf.logical_and(active, tf.gather(sorted_keys, tf.minimum(middle, size - 1)) < queries)
        low = tf.where(right, middle + 1, low)
        high = tf.where(tf.logical_and(active, tf.logical_not(right)), middle, high)
    return tf.minimum(low, size - 1)


@register("bgan")
class BGAN(HashingScheme):
    """BGAN (AAAI 2018). Defaults are the paper's settings (Sec. 4.1.4): K1 = 20, K2 = 30, lambda1 = lambda2 = 0.1.

    Args:
        bits: code length L.
        input_shape: one item's shape; images in [0, 1] (``[h, w, c]``, ``[h, w]`` or flat).
        seed: seeds initialisation and all training noise.
        network: ``"auto"`` (conv for 32x32 colour, else MLP), ``"mlp"`` or ``"conv"`` (the encoder).
        backbone: ``None``, the name of a ``keras.applications`` model (``backbones.APPLICATIONS``) or a
            ``keras.Model`` mapping images to ``[n, d]``: the encoder, generator and discriminator work on its
            features instead of the pixels (see "Backbone" above).
        backbone_weights: ``None`` or ``"imagenet"`` (a named backbone's pretrained weights, downloaded by Keras).
        train_backbone: ``None`` or ``False``: the backbone stays fixed (the feature space the GAN works in).
        encoder_units: hidden units of the MLP encoder.
        width: multiplies the channel counts of the generator (256/128/32) and discriminator
            (32/128/256/512, dense 1024): 1 is the paper's networks.
        k1, k2: Alg. 1's neighbour counts.
        graph_features: what the neighbourhood graph is built on: ``"pixels"``, ``"pca"`` (128 PCA
            components of the pixels), an array ``[n, d]`` aligned with the training items, or a
            ``keras.Model`` mapping items to ``[n, d]`` features.
        activation: ``"app"`` (Eq. 5) or ``"tanh"`` (Eq. 7).
        beta_stages: beta of each equal part of training (Sec. 3.4); ``(1.0,)`` is the two-step variant.
        negative_similarity: the target of c_i . c_j / L for pairs outside each other's lists: -1 as Eq. 2-4
            write S, or e.g. 0 (uncorrelated codes), which does not push apart the many same-class items a
            neighbour list misses.
        positive_weight: weight of neighbour pairs in l_N (1 in Eq. 10); a batch holds ~50 times more
            non-neighbour pairs than neighbour pairs.
        positive_weight_items: the training set size ``positive_weight`` was chosen at, or None. Each item keeps
            about the same number of neighbours, so a batch of a set n items large holds fewer neighbour pairs
            as n grows; with a size here the weight used is
            ``positive_weight * (n / positive_weight_items) ** positive_weight_exponent`` (None:
            ``positive_weight`` at any size).
        positive_weight_exponent: 1 keeps the neighbour pairs' share of l_N as n grows; larger exponents weight
            them more on larger sets.
        weight_content, weight_adversarial: lambda1 and lambda2 of Eq. 9; 0 removes the term (Table 2).
        generator_loss: ``"minimax"`` (Eq. 19 as written) or ``"non_saturating"``.
        optimizer_type: ``"sgd"`` (Sec. 4.1.4) or ``"adam"``; ``learning_rate`` for every player.
        conv_learning_rate: every player's learning rate when the encoder is the convolutional one (None:
            ``learning_rate``). That stack has no batch norm, and at rates the MLP encoder trains well with
            (Adam 1e-3) its ReLUs stop firing and every image gets the same code.
        momentum: SGD momentum (the paper states none).
    """

    loss_names = ("neighbour", "content", "d_loss", "g_adversarial", "beta", "saturation",
                  "bit_freq_min", "bit_freq_max")
    threshold = codes_lib.TANH_THRESHOLD
    input_kind = "images"
    needs_indices = True
    adapt_on_resume = True  # the neighbourhood graph is rebuilt from the same items, never checkpointed
    spec = SchemeSpec(
        encoder_players=("encoder",),
        paper_baselines=("lsh", "itq", "sh", "sph"),  # Table 3
        # Table 2 (components) and Table 4 (how the sign is reached), beside the full model.
        ablations={
            "l_N only": {"weight_content": 0.0, "weight_adversarial": 0.0},
            "l_N + l_C": {"weight_adversarial": 0.0},
            "l_N + l_A": {"weight_content": 0.0},
            "two-step (relaxed, sign after)": {"activation": "tanh", "beta_stages": [1.0]},
            "tanh continuation": {"activation": "tanh"},
        },
    )
    presets = named(
        paper=Preset(
            description="The paper's settings (Sec. 4.1.4 and 3.4): K1 = 20, K2 = 30, lambda1 = lambda2 = 0.1, SGD "
                        "with learning rate 0.01, batch 256, app(beta z) with beta raised 1 -> 10 in stages, the "
                        "generator's adversarial term as Eq. 19 writes it. The paper states no epoch count; 40 "
                        "epochs here. These are the constructor defaults.",
            epochs=40, batch_size=256, selected_on="paper (Sec. 4.1.4)"),
        neighbours=Preset(
            description="The neighbour structure loss alone (Table 2's l_N row) on a graph of 128 PCA components of "
                        "the pixels, neighbour pairs weighted 10x (16, 32 bits) or 20x (64 bits) against the ~50x "
                        "more non-neighbour pairs of a batch, Adam 1e-3, app(beta z) with beta raised 1 -> 100 in "
                        "six stages (99.1-99.9% of the final outputs are +-1 on mnist-10k). The neighbour-pair "
                        "weight is the one chosen at 9,000 training items, scaled with the training set's size as "
                        "(n / 9000) ** 1.68: each item keeps K1 + K2 neighbours however many items there are, so "
                        "their share of a batch's pairs falls as n grows, and on larger sets more weight than that "
                        "share (exponent 1) validated better. The convolutional encoder of "
                        "32x32 colour images trains at Adam 1e-4: at 1e-3 its ReLUs stop firing and every image gets "
                        "the same code. Without the generator "
                        "and discriminator it trains in about a minute on mnist-10k, where the paper's full networks "
                        "take over 100 s per epoch on two cores.",
            hyperparameters={"graph_features": "pca", "positive_weight": 20.0, "optimizer_type": "adam",
                             "learning_rate": 1e-3, "weight_content": 0.0, "weight_adversarial": 0.0,
                             "beta_stages": [1.0, 2.0, 5.0, 10.0, 30.0, 100.0], "positive_weight_items": 9000,
                             "positive_weight_exponent": 1.68, "conv_learning_rate": 1e-4},
            per_bits={16: {"positive_weight": 10.0}, 32: {"positive_weight": 10.0}},
            epochs=40, batch_size=256,
            selected_on="validation queries: REPRODUCTION.md#preset-bgan-neighbours"),
    )
    default_preset = "neighbours"

    hyperparameter_rules = {
        **backbones.RULES,
        "network": settings.Choice(NETWORKS), "encoder_units": settings.PositiveInts(), "width": settings.Positive(),
        "k1": settings.PositiveInt(), "k2": settings.PositiveInt(),
        "graph_features": settings.Checked(lambda value: BGAN._check_graph_features(value),
                                           describe=describe_graph_features),
        "activation": settings.Choice(ACTIVATIONS), "beta_stages": settings.PositiveNumbers(),
        "negative_similarity": settings.Interval(-1.0, 1.0),
        **{name: settings.NonNegative() for name in (
            "positive_weight", "weight_content", "weight_adversarial", "learning_rate", "momentum")},
        "conv_learning_rate": settings.Optional(settings.Positive()),
        "generator_loss": settings.Choice(losses.GENERATOR_LOSSES), "optimizer_type": settings.Choice(OPTIMIZERS),
        "positive_weight_items": settings.Optional(settings.PositiveInt()),
        "positive_weight_exponent": settings.Positive(),
    }

    @classmethod
    def check_combination(cls, hyperparameters: dict) -> None:
        backbones.check_fixed_backbone(hyperparameters, "BGAN")

    def __init__(self, bits=32, input_shape=None, seed=0, network="auto", encoder_units=(1024, 1024), width=1.0,
                 k1=20, k2=30, graph_features="pixels", activation="app", beta_stages=(1.0, 2.0, 5.0, 10.0),
                 negative_similarity=-1.0, positive_weight=1.0, weight_content=0.1, weight_adversarial=0.1,
                 generator_loss="minimax", optimizer_type="sgd", learning_rate=0.01, momentum=0.0,
                 positive_weight_items=None, positive_weight_exponent=1.0, conv_learning_rate=None, backbone=None,
                 backbone_weights=None, train_backbone=None, **kwargs):
        super().__init__(bits=bits, input_shape=input_shape, seed=seed, **kwargs)
        self._graph = None
        self._pair_keys = None
        self._preview = None
        self._on_backbone_features()  # with a backbone, the networks below take its features
        self._build_networks()

    @staticmethod
    def _check_graph_features(value):
        if isinstance(value, str):
            if value in GRAPH_FEATURE_KINDS or value.startswith(("array ", "model ")):
                return  # a name, or what a checkpoint recorded of an array / model given at training
        elif isinstance(value, keras.Model) or isinstance(value, np.ndarray):
            return
        raise ValueError(f"`graph_features` must be one of {list(GRAPH_FEATURE_KINDS)}, an array [n, d] or a "
                         f"keras.Model, got {type(value).__name__} {value!r:.80}.")

    # --- networks ------------------------------------------------------------------------------

    def _channels(self, count):
        return max(1, int(round(count * self.width)))

    def _build_networks(self):
        shape = self.network_shape
        self.network_kind = choose_network(shape, self.network, scheme="BGAN")
        size = int(np.prod(shape))
        spatial = len(shape) in (2, 3)
        channels = shape[-1] if len(shape) == 3 else 1
        if self.network_kind == "conv":
            # A VGG-style stack (Table 1's pattern of 3x3 convolutions and 2x2 pooling), sized for 32x32.
            trunk = []
            for filters in (64, 128, 256):
                trunk += [keras.layers.Conv2D(filters, 3, padding="same", activation="relu"),
                          keras.layers.Conv2D(filters, 3, padding="same", activation="relu"),
                          keras.layers.MaxPooling2D(2)]
            trunk += [keras.layers.Flatten(), keras.layers.Dense(1024, activation="relu")]
        else:
            trunk = [keras.layers.Flatten()] + [keras.layers.Dense(u, activation="relu") for u in self.encoder_units]
        self.encoder = keras.Sequential([keras.Input(shape)] + trunk, name="encoder")
        self.hash_layer = keras.layers.Dense(self.bits, name="hash_layer", dtype=OUTPUT_DTYPE)  # W_h: z = W_h^T phi(I)
        self.hash_layer.build((None, self.encoder.output_shape[-1]))

        # Generator (Sec. 3.2.3): fc -> feature map at 1/4 of the image -> 5x5 deconvolutions 256 / 128 / 32,
        # batch norm and ELU, then a 1x1 deconvolution to the image's channels.
        if spatial and shape[0] % 4 == 0 and shape[1] % 4 == 0:
            h, w = shape[0] // 4, shape[1] // 4
            layers = [keras.layers.Dense(h * w * self._channels(256)), batch_norm(), keras.layers.ELU(),
                      keras.layers.Reshape((h, w, self._channels(256)))]
            for filters, stride in ((256, 1), (128, 2), (32, 2)):
                layers += [keras.layers.Conv2DTranspose(self._channels(filters), 5, strides=stride, padding="same"),
                           batch_norm(), keras.layers.ELU()]
            layers += [keras.layers.Conv2DTranspose(channels, 1, activation="sigmoid", dtype=OUTPUT_DTYPE),
                       keras.layers.Reshape(shape, dtype=OUTPUT_DTYPE)]
        else:  # flat items, or sizes the deconvolutions cannot reach
            layers = [keras.layers.Dense(self._channels(512)), batch_norm(), keras.layers.ELU(),
                      keras.layers.Dense(self._channels(1024)), batch_norm(), keras.layers.ELU(),
                      keras.layers.Dense(size, activation="sigmoid", dtype=OUTPUT_DTYPE),
                      keras.layers.Reshape(shape, dtype=OUTPUT_DTYPE)]
        self.generator = keras.Sequential([keras.Input((self.bits,))] + layers, name="generator")

        # Discriminator (Sec. 3.2.3): 4 strided 5x5 convolutions 32 / 128 / 256 / 512 with ELU (their last
        # output is phi of Eq. 12), a dense layer of 1024 and one logit (sigmoid inside the loss).
        if spatial:
            image_shape = shape if len(shape) == 3 else shape + (1,)
            features = [keras.layers.Reshape(image_shape)]
            for filters in (32, 128, 256, 512):
                features += [keras.layers.Conv2D(self._channels(filters), 5, strides=2, padding="same"),
                             keras.layers.ELU()]
        else:
            features = [keras.layers.Dense(self._channels(512)), keras.layers.ELU(),
                        keras.layers.Dense(self._channels(512)), keras.layers.ELU()]
        self.discriminator_features = keras.Sequential([keras.Input(shape)] + features, name="discriminator_features")
        self.discriminator_head = keras.Sequential(
            [keras.Input(self.discriminator_features.output_shape[1:]), keras.layers.Flatten(),
             keras.layers.Dense(self._channels(1024)), keras.layers.ELU(), keras.layers.Dense(1, dtype=OUTPUT_DTYPE)],
            name="discriminator_head")

    def players(self) -> dict:
        # Eq. 18-21: encoder (theta) and hash layer (W_h) minimise l_N + l_C, G (pi) l_C + l_A, D (psi) maximises l_A.
        return {"encoder": self.encoder.trainable_variables + self.hash_layer.trainable_variables,
                "generator": self.generator.trainable_variables,
                "discriminator": (self.discriminator_features.trainable_variables
                                  + self.discriminator_head.trainable_variables)}

    @property
    def player_learning_rate(self) -> float:
        if self.network_kind == "conv" and self.conv_learning_rate is not None:
            return self.conv_learning_rate
        return self.learning_rate

    def default_optimizer(self, player: str, total_steps: int | None) -> keras.optimizers.Optimizer:
        if self.optimizer_type == "sgd":
            return keras.optimizers.SGD(self.player_learning_rate, momentum=self.momentum, name=f"{player}_sgd")
        return keras.optimizers.Adam(self.player_learning_rate, name=f"{player}_adam")

    # --- the neighbourhood structure -------------------------------------------------------------

    def _graph_inputs(self, x):
        source = self.graph_features
        n = x.shape[0]
        if isinstance(source, str) and source.startswith(("array ", "model ")):
            raise ValueError(f"`graph_features` was {source!r} when this model was trained: pass the same array or "
                             "model again to continue training it.")
        if isinstance(source, np.ndarray):
            features = source
        elif isinstance(source, keras.Model):
            features = np.asarray(source.predict(x, batch_size=256, verbose=0))
            if features.ndim != 2 or features.shape[0] != n:
                raise ValueError(f"`graph_features` model must map the {n} training items to features [n, d], got "
                                 f"output of shape {features.shape}.")
        elif source == "pca":
            features = neighbours.pca_features(x, seed=self.seed)
        else:
            features = x.reshape(n, -1)
        features = _validation.check_features(features, "graph_features")
        if features.ndim != 2 or features.shape[0] != n:
            raise ValueError(f"`graph_features` must hold one feature row per training item ([{n}, d]), got shape "
                             f"{features.shape}.")
        return features

    def adapt(self, x: Any, y: Any = None) -> None:
        """Builds the neighbourhood graph (Alg. 1) on the training items' features; labels are not used."""
        if isinstance(x, tf.data.Dataset):
            raise ValueError("bgan builds its graph from the training items in index order: pass arrays, or a "
                             "dataset without an 'index' key (tfhash.fit then reads it once in order).")
        x = np.asarray(x)
        n = x.shape[0]
        for name, value in (("k1", self.k1), ("k2", self.k2)):
            if value >= n:
                raise ValueError(f"`{name}` must be smaller than the number of training items ({n}), got {value}.")
        features = self._graph_inputs(x)
        self._graph = neighbours.neighbourhood_graph(features, self.k1, self.k2)
        self._pair_keys = tf.constant(self._graph.pair_keys(), tf.int64)
        self._num_items = n
        self._preview = x[:16]

    @property
    def neighbour_pair_weight(self) -> float:
        """``positive_weight``, scaled to the training set's size when ``positive_weight_items`` is set."""
        if self.positive_weight_items is None or self._graph is None:
            return self.positive_weight
        return self.positive_weight * (self._num_items / self.positive_weight_items) ** self.positive_weight_exponent

    @property
    def graph(self) -> Any:
        """The :class:`tfhash.neighbours.NeighbourGraph` built by ``adapt`` (``None`` before)."""
        return self._graph

    def _similarity(self, rows, columns):
        """S_ij for item indices ``rows`` ``[b]`` x ``columns`` ``[B]``: +1 listed, ``negative_similarity`` else."""
        keys = rows[:, None] * self._num_items + columns[None, :]
        flat = tf.reshape(keys, [-1])
        found = tf.cast(tf.equal(tf.gather(self._pair_keys, _lower_bound(self._pair_keys, flat)), flat), tf.float32)
        return tf.reshape(found + (1.0 - found) * self.negative_similarity, tf.shape(keys))

    # --- encoding ------------------------------------------------------------------------------

    def _beta(self, step):
        stages = tf.constant(self.beta_stages, tf.float32)
        total = self.total_steps
        if not total:
            return stages[0]
        stage = tf.minimum(tf.cast(step, tf.int64) * len(self.beta_stages) // total, len(self.beta_stages) - 1)
        return tf.gather(stages, stage)

    def _relaxed_codes(self, x, beta, training=False):
        return losses.continuation_sign(self.hash_layer(self.encoder(x, training=training)), beta, self.activation)

    def encode_graph(self, inputs: tf.Tensor) -> tf.Tensor:
        # The converged network: the last stage's beta (codes are sign(z) whatever beta is).
        return self._relaxed_codes(inputs, self.beta_stages[-1])

    def sample_images(self, count: int, seed: int = 0) -> np.ndarray | None:
        """Training images beside their reconstructions from their codes (pairs of columns), for TensorBoard."""
        if self._preview is None or len(self.network_shape) not in (2, 3):
            return None
        x = tf.constant(self._preview[: max(1, count // 2)], tf.float32)
        reconstruction = self.generator(self._relaxed_codes(x, self.beta_stages[-1]), training=False)
        pairs = tf.reshape(tf.stack([x, reconstruction], axis=1), (-1,) + tuple(self.network_shape))
        images = pairs.numpy()
        return images if images.ndim == 4 else images[..., None]

    # --- training ------------------------------------------------------------------------------

    def _neighbour_loss(self, codes, index, step_context):
        """l_N (Eq. 18) of this replica's items against the whole global batch: S for every pair it holds."""
        context = tf.distribute.get_replica_context()
        all_codes = context.all_gather(tf.stop_gradient(codes), axis=0)
        # int32 on the wire: collectives of MultiWorkerMirroredStrategy refuse int64 ("destinations can not
        # be empty"); item indices stay far below 2^31.
        all_index = tf.cast(context.all_gather(tf.cast(index, tf.int32), axis=0), tf.int64)
        mask = tf.cast(tf.not_equal(index[:, None], all_index[None, :]), tf.float32)
        pairs = tf.cast(step_context.global_batch * (step_context.global_batch - 1), tf.float32)
        neighbour = losses.neighbour_structure(codes, all_codes, self._similarity(index, all_index),
                                               tf.transpose(self._similarity(all_index, index)), mask,
                                               self.neighbour_pair_weight)
        return tf.reduce_sum(neighbour) / pairs

    def _generator_terms(self, x, codes, local_batch):
        """Per-item l_C (Eq. 11-12: pixels and discriminator features) and the generator's l_A (Eq. 14, 19)."""
        content, g_adversarial = tf.zeros([local_batch]), tf.zeros([local_batch])
        if self.weight_content <= 0 and self.weight_adversarial <= 0:
            return content, g_adversarial
        reconstruction = self.generator(codes, training=True)
        if self.weight_content > 0:
            real_phi = self.discriminator_features(x)
            fake_phi = self.discriminator_features(reconstruction)
            content = (losses.pixel_mse(reconstruction, x)
                       + tf.reduce_mean(tf.square(tf.reshape(real_phi - fake_phi, [local_batch, -1])), axis=-1))
        if self.weight_adversarial > 0:
            fake_logits = self.discriminator_head(self.discriminator_features(reconstruction))
            # "minimax": G minimises log(1 - D(x^R)) as Eq. 14 and 19 write it.
            g_adversarial = losses.generator_adversarial(fake_logits, self.generator_loss)
        return content, g_adversarial

    def _discriminator_step(self, x, codes, step_context):
        """Eq. 20: maximise l_A, i.e. minimise -log D(x) - log(1 - D(x^R)); per-item losses for the logs."""
        if self.weight_adversarial <= 0:
            return tf.zeros([step_context.local_batch])
        fake = tf.stop_gradient(self.generator(tf.stop_gradient(codes), training=True))
        with tf.GradientTape() as tape:
            d_loss = losses.discriminator_cross_entropy(self.discriminator_head(self.discriminator_features(x)),
                                                        self.discriminator_head(self.discriminator_features(fake)))
            total = step_context.average(d_loss)
        self.minimise(tape, total, "discriminator")
        return d_loss

    def train_step(self, data: Any) -> dict:
        x, _, index = self._step_inputs(data)
        if self._pair_keys is None:
            raise ValueError("bgan needs its neighbourhood graph: train it with tfhash.fit (which calls adapt).")
        x = tf.cast(x, tf.float32)
        index = tf.cast(index, tf.int64)
        step_context = distribution.step_context(x)
        average = step_context.average
        optimizers = self.scheme_optimizers
        beta = self._beta(optimizers["encoder"].iterations)
        train_generator = self.weight_content > 0 or self.weight_adversarial > 0

        # 1. Encoder + hash layer (Eq. 18, 21): l_N + lambda1 l_C; the generator on l_C + lambda2 l_A.
        with tf.GradientTape(persistent=True) as tape:
            codes = self._relaxed_codes(x, beta, training=True)
            neighbour_loss = self._neighbour_loss(codes, index, step_context)
            content, g_adversarial = self._generator_terms(x, codes, step_context.local_batch)
            encoder_loss = neighbour_loss + self.weight_content * average(content)
            generator_loss = self.weight_content * average(content) + self.weight_adversarial * average(g_adversarial)
        for player, loss in (("encoder", encoder_loss), ("generator", generator_loss)):
            if player == "generator" and not train_generator:
                continue
            self.minimise(tape, loss, player)
        del tape
        d_loss = self._discriminator_step(x, codes, step_context)

        saturation = distribution.global_batch_mean(tf.cast(tf.abs(codes) >= 0.99, tf.float32))
        return self.update_trackers({
            # Each replica's share counts every pair twice (see losses.neighbour_structure): halve the sum.
            "neighbour": neighbour_loss * tf.cast(step_context.replicas, tf.float32) / 2.0,
            "content": tf.reduce_mean(content), "d_loss": tf.reduce_mean(d_loss),
            "g_adversarial": tf.reduce_mean(g_adversarial), "beta": beta,
            "saturation": tf.reduce_mean(saturation), **distribution.code_statistics(codes, self.threshold),
        })
