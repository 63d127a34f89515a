"""DSH-GANs: deep semantic hashing with generative adversarial networks (Qiu et al., SIGIR 2017).

Semi-supervised: a few training items are labelled (class ids, or multi-hot rows for multi-label data), most
are not. One ``tfhash.fit`` call trains both stages; the epoch decides the stage (``generator_epochs``), so a
run interrupted in either stage resumes in it.

1. Semi-supervised conditional GAN (Sec. 3.2): G(C, z) from a label vector C (zeros for unlabelled items) and
   Gaussian noise z; D predicts the source (real / synthetic) and the class. D minimises l_c + l_a over real
   items (labelled and unlabelled) and synthetic ones; G minimises l_c - l_a.
2. DSH-GANs (Sec. 3.3-3.6): one shared network (backbone + hash, adversary and classification streams) on
   real-synthetic triplets (a labelled query x, G(labels of x), G(labels sharing none with x)). The shared
   network minimises Eq. 8 = triplet (Eq. 3) + l_a (Eq. 4) + l_c (Eq. 7); G keeps training, on Eq. 9 =
   triplet - l_a + l_c.

Choices where the paper is open (each an argument):

* -l_a for G (Sec. 3.2 and Eq. 9) is realised as the non-saturating loss: G minimises the cross-entropy of its
  images labelled *real*. It has the fixed point of minimising -l_a, but its gradient does not vanish while D
  rejects G's images easily, which is how training begins. ``generator_loss="minimax"`` is -l_a as written.
* The triplets' queries (the paper's set T) are drawn at random from the labelled items at every stage-2 step,
  ``batch_size`` of them, so a stage-2 epoch has as many steps as a stage-1 epoch.
* Stage 1's synthetic images follow the label vectors of the real batch (Sec. 3.2: zeros for the unlabelled
  ones), and l_c covers the batch's labelled items. With few labels almost every synthetic image is then
  unconditioned; ``label_sampling="labelled"`` also draws a batch of labelled items at each step, classifies
  them and conditions every synthetic image on their label vectors.
* The shared network of Sec. 4.2 is an ImageNet-pretrained AlexNet, which this library cannot download: the
  default is a small CNN from scratch (``backbone`` takes any ``keras.Model``, e.g. with pretrained weights),
  and ``shared_init="discriminator"`` starts it from stage 1's discriminator, which has seen every item.
* Not in the paper, each an argument: a real triplet beside each real-synthetic one (``real_triplets``), G frozen
  after stage 1 (``generator_in_stage_two=False``), D learning its classes from real items only
  (``classify_synthetic=False``). The ``semi`` preset uses the first two, the best GAN setting on validation
  queries; ``paper`` uses none.
* Losses are means over the items they cover (the paper sums over T; a mean keeps the learning rate
  independent of the batch size).
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfhash import distribution, losses, stateless
from tfhash.schemes import backbones, settings
from tfhash.schemes.backbones import default_backbone, describe_backbone, is_small_image
from tfhash.schemes.base import HashingScheme, SchemeSpec
from tfhash.schemes.layers import OPTIMIZERS, OUTPUT_DTYPE
from tfhash.schemes.presets import Preset, named
from tfhash.schemes.registry import register

LABEL_SAMPLINGS = ("batch", "labelled")
SHARED_INITS = ("scratch", "discriminator")
MIN_LABELLED_PER_CLASS = 2  # a real positive other than the query itself, and a class G has seen twice
NEGATIVE_CANDIDATES = 16  # labelled items tried per query for one sharing no label with it


def _gan_initializer():
    return keras.initializers.RandomNormal(stddev=0.02)  # Sec. 4.2, after DCGAN


def default_generator(item_shape: tuple, input_size: int) -> keras.Model:
    """G(C, z) (DCGAN-style): a dense layer to a 7x7 / 4x4 map, then 4x4 transposed convolutions with batch
    norm and ReLU up to the image (sigmoid: values in [0, 1]); dense layers for other item shapes."""
    shape = tuple(item_shape)
    init = _gan_initializer()
    norm = lambda: keras.layers.BatchNormalization(synchronized=True)  # noqa: E731  (global batch statistics)
    layers = [keras.Input((input_size,))]
    if is_small_image(shape):
        start, filters = (7, (128, 64)) if shape[0] == 28 else (4, (256, 128, 64))
        layers += [keras.layers.Dense(start * start * filters[0], kernel_initializer=init), norm(),
                   keras.layers.ReLU(), keras.layers.Reshape((start, start, filters[0]))]
        for f in filters[1:]:
            layers += [keras.layers.Conv2DTranspose(f, 4, strides=2, padding="same", kernel_initializer=init),
                       norm(), keras.layers.ReLU()]
        layers.append(keras.layers.Conv2DTranspose(shape[-1], 4, strides=2, padding="same", activation="sigmoid",
                                                   kernel_initializer=init, dtype=OUTPUT_DTYPE))
    else:
        layers += [keras.layers.Dense(256, kernel_initializer=init), norm(), keras.layers.ReLU(),
                   keras.layers.Dense(512, kernel_initializer=init), norm(), keras.layers.ReLU(),
                   keras.layers.Dense(int(np.prod(shape)), activation="sigmoid", kernel_initializer=init,
                                      dtype=OUTPUT_DTYPE),
                   keras.layers.Reshape(shape, dtype=OUTPUT_DTYPE)]
    return keras.Sequential(layers, name="generator")


def label_vectors(labels: tf.Tensor, num_classes: int) -> tf.Tensor:
    """``[n, num_classes]`` float 0/1 rows of labels (class ids with -1 unlabelled -> all-zero rows, or multi-hot)."""
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 1:
        return tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)  # -1 -> zeros
    return tf.cast(labels, tf.float32)


class _StageSwitch(keras.callbacks.Callback):
    """Sets the scheme's stage from the epoch at each epoch start; a new stage retraces the train step."""

    def on_train_begin(self, logs=None):
        epochs = (self.params or {}).get("epochs")
        if epochs is not None and self.model.stage_of_epoch(epochs - 1) == 1:
            warnings.warn(f"`epochs` ({epochs}) ends within stage 1 (generator_epochs={self.model.generator_epochs}): "
                          "the hash stream is not trained; raise `epochs` above `generator_epochs`.", stacklevel=2)

    def on_epoch_begin(self, epoch, logs=None):
        self.model._enter_stage(self.model.stage_of_epoch(epoch), epoch)


@register("dshgan")
class DSHGAN(HashingScheme):
    """DSH-GANs (SIGIR 2017). Loss weights default to the paper's (Eq. 8-9: all 1).

    Args:
        bits: code length K.
        input_shape: one item's shape; images in [0, 1].
        seed: seeds initialisation and all training noise.
        num_classes: classes c of the labels; ``tfhash.fit`` infers it from ``y``.
        multi_label: whether labels are multi-hot rows (sigmoid classification, Eq. 6) rather than class ids
            (softmax, Eq. 5); ``tfhash.fit`` infers it from ``y``.
        use_generator: ``False`` trains the same shared network without any GAN: no stage 1, triplets of real
            labelled items (a positive of the same labels, a negative sharing none), classification kept and
            no adversary stream. The baseline the paper's claim is measured against.
        backbone: ``None`` (the small CNN from scratch), the name of a ``keras.applications`` model
            (``tfhash.schemes.backbones.APPLICATIONS``; colour images, its own preprocessing) or a ``keras.Model``
            mapping items to ``[n, d]`` features (e.g. a network with pretrained weights, as the paper's AlexNet).
        backbone_weights: ``None`` or ``"imagenet"`` (a named backbone's pretrained weights, downloaded by Keras).
        train_backbone: whether the backbone learns with the streams; ``None`` (default): frozen when pretrained
            (``backbone_weights`` set), learning otherwise.
        shared_init: ``"scratch"`` or ``"discriminator"`` (stage 2 starts from stage 1's discriminator; the
            default backbone only).
        noise_dim: length of the Gaussian noise z.
        generator_epochs: epochs of stage 1 (the conditional GAN); the remaining epochs are stage 2.
        label_sampling: ``"batch"`` (Sec. 3.2) or ``"labelled"`` (see the module notes).
        weight_triplet, weight_adversarial, weight_classification: weights of Eq. 8-9's terms; 0 removes one
            (``weight_classification=0`` is the paper's DSH-GANs^-).
        margin: the triplet margin (Eq. 3: 1).
        generator_loss: ``"non_saturating"`` or ``"minimax"`` (see the module notes).
        gan_learning_rate, gan_beta_1: Adam for G and D (Sec. 4.2: 2e-4 and "momentum" 0.9; DCGAN, whose
            settings the paper says it follows, uses beta_1 = 0.5).
        optimizer_type: the shared network's optimiser, ``"sgd"`` (Sec. 4.2: momentum 0.9) or ``"adam"``.
        learning_rate: its learning rate (Sec. 4.2: 1e-4), divided by 10 after ``decay_steps`` steps (10,000
            on CIFAR-10); 0 steps: no decay.
        weight_decay: the shared network's weight decay (Sec. 4.2: 5e-4).
        generator_in_stage_two: whether G keeps training in stage 2 (Eq. 9) or stays as stage 1 left it.
        classify_synthetic: whether stage 1's D also learns to classify G's images by the labels they were
            conditioned on (Sec. 3.2: D classifies "each image example from either real images or synthetic
            images"; AC-GAN does the same), or learns its classes from real labelled items only.
        real_triplets: with the GAN, also a triplet of real labelled items per query (a positive of the same
            labels, the negative whose labels condition the synthetic negative) beside the real-synthetic one;
            the paper trains on real-synthetic triplets only.
    """

    loss_names = ("stage", "d_loss", "g_loss", "triplet", "adversarial", "classification", "active_triplets",
                  "bit_freq_min", "bit_freq_max")
    input_kind = "images"
    needs_labels = True
    adapt_on_resume = True  # the labelled items are kept again from the training data, never checkpointed
    spec = SchemeSpec(
        encoder_players=("shared",),  # the export holds the backbone and the hash stream only
        paper_baselines=("lsh", "itq", "sh"),  # Table 1's unsupervised shallow methods
        # The paper's DSH-GANs^- (Table 1), and the baselines of its claim.
        ablations={
            "DSH-GANs^- (no classification stream)": {"weight_classification": 0.0},
            "no GAN (real triplets)": {"use_generator": False},
        },
    )
    presets = named(
        paper=Preset(
            description="The paper's settings (Sec. 4.2): G and D with Adam 2e-4 and momentum 0.9, weights "
                        "N(0, 0.02), LeakyReLU slope 0.2; the shared network with SGD, momentum 0.9, learning rate "
                        "1e-4 divided by 10 after 10,000 steps, weight decay 5e-4, batch 64; loss weights 1 "
                        "(Eq. 8-9); stage-1 synthetic images follow the batch's labels (Sec. 3.2). The paper "
                        "states no epoch counts (20 of stage 1, 40 in all here) and uses batch 128 for the GAN; "
                        "one batch size serves both stages here. These are the constructor defaults.",
            epochs=40, batch_size=64, selected_on="paper (Sec. 4.2)"),
        semi=Preset(
            description="Stage 1 for 10 of 30 epochs, then the shared network with Adam 1e-3 (SGD at 1e-4 barely moves "
                        "a network trained from scratch) on two triplets per labelled query: the paper's "
                        "real-synthetic one and one of real labelled items; G stays as stage 1 left it. Everything "
                        "else as in the paper.",
            hyperparameters={"optimizer_type": "adam", "learning_rate": 1e-3, "generator_epochs": 10,
                             "real_triplets": True, "generator_in_stage_two": False},
            epochs=30, batch_size=64,
            selected_on="validation queries: REPRODUCTION.md#preset-dshgan-semi"),
        no_gan=Preset(
            description="The shared network alone, without any GAN (use_generator=False): triplets of real labelled "
                        "items and the classification stream, Adam 1e-3, 30 epochs. Synthetic triplets (`semi`, the "
                        "best GAN setting) lost to it on mnist-10k and fell below ITQ with 10 labels per class; they "
                        "were level on fashion-mnist-10k and ahead on cifar10-6k with 50 labels per class, so try "
                        "both.",
            hyperparameters={"use_generator": False, "optimizer_type": "adam", "learning_rate": 1e-3},
            epochs=30, batch_size=64,
            selected_on="validation queries: REPRODUCTION.md#preset-dshgan-no-gan"),
    )
    default_preset = "no_gan"

    hyperparameter_rules = {
        "num_classes": settings.Optional(settings.PositiveInt(2, "a triplet needs another class")),
        **{name: settings.Flag(strict=True) for name in (
            "multi_label", "use_generator", "generator_in_stage_two", "real_triplets", "classify_synthetic")},
        **backbones.RULES, "shared_init": settings.Choice(SHARED_INITS),
        "noise_dim": settings.PositiveInt(), "generator_epochs": settings.Count(),
        "label_sampling": settings.Choice(LABEL_SAMPLINGS),
        **{name: settings.NonNegative() for name in (
            "weight_triplet", "weight_adversarial", "weight_classification", "margin", "gan_learning_rate",
            "learning_rate", "weight_decay")},
        "gan_beta_1": settings.Fraction(), "generator_loss": settings.Choice(losses.GENERATOR_LOSSES),
        "optimizer_type": settings.Choice(OPTIMIZERS), "decay_steps": settings.Count(zero="0: no decay"),
    }

    @classmethod
    def check_combination(cls, hyperparameters: dict) -> None:
        if hyperparameters["shared_init"] == "discriminator" and (
                hyperparameters["backbone"] is not None or not hyperparameters["use_generator"]):
            raise ValueError("`shared_init`='discriminator' needs the default backbone (backbone=None) and the GAN "
                             f"(use_generator=True), got backbone={describe_backbone(hyperparameters['backbone'])!r}, "
                             f"use_generator={hyperparameters['use_generator']!r}.")

    def __init__(self, bits=32, input_shape=None, seed=0, num_classes=None, multi_label=False, use_generator=True,
                 backbone=None, backbone_weights=None, train_backbone=None, shared_init="scratch", noise_dim=100,
                 generator_epochs=20, label_sampling="batch",
                 weight_triplet=1.0, weight_adversarial=1.0, weight_classification=1.0, margin=1.0,
                 generator_loss="non_saturating", gan_learning_rate=2e-4, gan_beta_1=0.9, optimizer_type="sgd",
                 learning_rate=1e-4, decay_steps=10_000, weight_decay=5e-4, generator_in_stage_two=True,
                 real_triplets=False, classify_synthetic=True, **kwargs):
        super().__init__(bits=bits, input_shape=input_shape, seed=seed, **kwargs)
        self._stage = None
        self._pool = None
        if self.num_classes is None:
            raise ValueError("`num_classes` is required to build DSH-GANs (tfhash.fit infers it from `y`).")
        self.shared_backbone = self._build_backbone("shared_backbone")
        width = self.shared_backbone.output_shape[-1]
        self.hash_stream = keras.layers.Dense(self.bits, activation="sigmoid", name="hash_stream", dtype=OUTPUT_DTYPE)
        self.class_stream = keras.layers.Dense(self.num_classes, name="class_stream", dtype=OUTPUT_DTYPE)
        self.hash_stream.build((None, width))
        self.class_stream.build((None, width))
        if self.use_generator:
            self.source_stream = keras.layers.Dense(1, name="source_stream", dtype=OUTPUT_DTYPE)
            self.source_stream.build((None, width))
            self.generator = default_generator(self.item_shape, self.num_classes + self.noise_dim)
            self.discriminator = default_backbone(self.item_shape, "discriminator", _gan_initializer())
            self.discriminator_source = keras.layers.Dense(1, kernel_initializer=_gan_initializer(),
                                                           name="discriminator_source", dtype=OUTPUT_DTYPE)
            self.discriminator_class = keras.layers.Dense(self.num_classes, kernel_initializer=_gan_initializer(),
                                                          name="discriminator_class", dtype=OUTPUT_DTYPE)
            self.discriminator_source.build((None, self.discriminator.output_shape[-1]))
            self.discriminator_class.build((None, self.discriminator.output_shape[-1]))

    @classmethod
    def settings_from_labels(cls, labels: np.ndarray, hyperparameters: dict) -> dict:
        """``num_classes`` and ``multi_label`` of the training labels, after checking each class has at least
        ``MIN_LABELLED_PER_CLASS`` labelled items."""
        multi_label = labels.ndim == 2
        asked = hyperparameters.get("num_classes")
        if multi_label:
            found = labels.shape[1]
            counts = labels.sum(axis=0).astype(np.int64)
        else:
            found = int(labels.max()) + 1
            counts = np.bincount(labels[labels >= 0], minlength=max(found, asked or 0))
        if asked is not None and found > asked:
            what = f"rows of {found} classes" if multi_label else f"class ids up to {found - 1}"
            raise ValueError(f"`y` must hold class ids in [0, {asked - 1}] (num_classes={asked}), got {what}.")
        num_classes = asked or found
        if num_classes < 2:
            raise ValueError(f"`y` must label items of at least 2 classes (a triplet's negative has other labels), "
                             f"got {num_classes}.")
        few = {c: int(n) for c, n in enumerate(counts) if n < MIN_LABELLED_PER_CLASS}
        if few:
            raise ValueError(f"`y` must label at least {MIN_LABELLED_PER_CLASS} items of every class; classes with "
                             f"fewer (class: count): {dict(list(few.items())[:10])}.")
        if "multi_label" in hyperparameters and bool(hyperparameters["multi_label"]) != multi_label:
            raise ValueError(f"`multi_label`={hyperparameters['multi_label']!r} does not match `y` "
                             f"({'multi-hot rows' if multi_label else 'class ids'}).")
        return {"num_classes": int(num_classes), "multi_label": multi_label}

    # --- networks ------------------------------------------------------------------------------

    def players(self) -> dict:
        shared = ((self.shared_backbone.trainable_variables if self.backbone_learns else [])
                  + self.hash_stream.trainable_variables + self.class_stream.trainable_variables)
        if not self.use_generator:
            return {"shared": shared}
        return {"shared": shared + self.source_stream.trainable_variables,
                "generator": self.generator.trainable_variables,
                "discriminator": (self.discriminator.trainable_variables
                                  + self.discriminator_source.trainable_variables
                                  + self.discriminator_class.trainable_variables)}

    def default_optimizer(self, player: str, total_steps: int | None) -> keras.optimizers.Optimizer:
        if player in ("generator", "discriminator"):
            return keras.optimizers.Adam(self.gan_learning_rate, beta_1=self.gan_beta_1, name=f"{player}_adam")
        rate = self.learning_rate
        if self.decay_steps:
            rate = keras.optimizers.schedules.PiecewiseConstantDecay([self.decay_steps],
                                                                     [self.learning_rate, self.learning_rate * 0.1])
        decay = self.weight_decay or None
        if self.optimizer_type == "sgd":
            # Keras applies weight decay to the weights directly (Caffe adds it to the gradient, before momentum).
            return keras.optimizers.SGD(rate, momentum=0.9, weight_decay=decay, name="shared_sgd")
        return keras.optimizers.Adam(rate, weight_decay=decay, name="shared_adam")

    def encode_graph(self, inputs: tf.Tensor) -> tf.Tensor:
        return self.hash_stream(self.shared_backbone(inputs, training=False))

    def generate(self, label_rows: tf.Tensor, noise: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Synthetic images G(C, z) from label vectors ``[n, num_classes]`` and noise ``[n, noise_dim]``."""
        return self.generator(tf.concat([tf.cast(label_rows, tf.float32), noise], axis=-1), training=training)

    @property
    def sample_columns(self) -> int:
        return max(1, 64 // self.num_classes) if self.use_generator else 8

    def sample_images(self, count: int, seed: int = 0) -> np.ndarray | None:
        """Generated images, one row per class (``count // num_classes`` each, at least one)."""
        if not self.use_generator or len(self.item_shape) != 3:
            return None
        per_class = max(1, count // self.num_classes)
        classes = np.repeat(np.arange(self.num_classes), per_class)
        rows = tf.one_hot(classes, self.num_classes)
        noise = stateless.normal((classes.size, self.noise_dim), [seed, 17])
        return self.generate(rows, noise).numpy()

    # --- training data -------------------------------------------------------------------------

    def adapt(self, x: Any, y: Any = None) -> None:
        """Keeps the labelled items: the queries of stage 2 and the items real triplets are drawn from."""
        if isinstance(x, tf.data.Dataset):
            pairs = [(np.asarray(a), np.asarray(b)) for a, b in tf.data.Dataset.zip((x, y)).as_numpy_iterator()]
            x = np.concatenate([a for a, _ in pairs])
            y = np.concatenate([b for _, b in pairs])
        y = np.asarray(y)
        rows = np.asarray(label_vectors(y, self.num_classes))
        labelled = rows.any(axis=1)
        pool_x, pool_rows = np.asarray(x)[labelled].astype(np.float32), rows[labelled]
        # Positives: items of one of the query's classes, from per-class lists (CSR over the labelled items).
        members = [np.flatnonzero(pool_rows[:, c]) for c in range(self.num_classes)]
        self._pool = {
            "x": tf.constant(pool_x), "rows": tf.constant(pool_rows),
            "class_items": tf.constant(np.concatenate(members).astype(np.int32)),
            "class_starts": tf.constant(np.cumsum([0] + [m.size for m in members[:-1]]).astype(np.int32)),
            "class_counts": tf.constant(np.array([m.size for m in members], np.int32)),
        }

    def _draw(self, seed, local, maxval):
        """``local`` integers in [0, maxval), this replica's share of a global draw."""
        return distribution.batch_random(stateless.uniform, [local], seed, minval=0, maxval=maxval, dtype=tf.int32)

    def _queries(self, local, seed):
        index = self._draw(seed, local, tf.shape(self._pool["rows"])[0])
        return tf.gather(self._pool["x"], index), tf.gather(self._pool["rows"], index)

    def _real_positive(self, rows, seed):
        """A labelled item sharing a class with each query (a random one of its classes)."""
        local = tf.shape(rows)[0]
        u = distribution.batch_random(stateless.uniform, [local, 2], seed)
        count = tf.reduce_sum(rows, axis=1)
        k = tf.floor(u[:, 0] * count)
        chosen = tf.argmax(tf.cast(tf.cumsum(rows, axis=1) > k[:, None], tf.int32), axis=1, output_type=tf.int32)
        counts = tf.gather(self._pool["class_counts"], chosen)
        offset = tf.minimum(tf.cast(u[:, 1] * tf.cast(counts, tf.float32), tf.int32), counts - 1)
        item = tf.gather(self._pool["class_items"], tf.gather(self._pool["class_starts"], chosen) + offset)
        return tf.gather(self._pool["x"], item)

    def _negative(self, rows, seed):
        """A labelled item sharing no label with each query (first of ``NEGATIVE_CANDIDATES`` random ones), and
        whether one was found."""
        local = tf.shape(rows)[0]
        candidates = distribution.batch_random(stateless.uniform, [local, NEGATIVE_CANDIDATES], seed, minval=0,
                                       maxval=tf.shape(self._pool["rows"])[0], dtype=tf.int32)
        overlap = tf.einsum("bc,bkc->bk", rows, tf.gather(self._pool["rows"], candidates))
        disjoint = tf.cast(tf.equal(overlap, 0.0), tf.int32)
        first = tf.argmax(disjoint, axis=1, output_type=tf.int32)
        item = tf.gather(candidates, first, batch_dims=1)
        return item, tf.cast(tf.reduce_max(disjoint, axis=1), tf.float32)

    # --- training ------------------------------------------------------------------------------

    def stage_of_epoch(self, epoch: int) -> int:
        """1 (conditional GAN) for the first ``generator_epochs`` epochs, then 2 (DSH-GANs); always 2 without G."""
        return 1 if self.use_generator and epoch < self.generator_epochs else 2

    def _enter_stage(self, stage, epoch):
        if stage == 2 and self.shared_init == "discriminator" and epoch == self.generator_epochs and epoch > 0:
            # Stage 2 begins: its backbone starts from the discriminator's (same architecture).
            for target, source in zip(self.shared_backbone.weights, self.discriminator.weights):
                target.assign(source)
        if stage != self._stage:
            self._stage = stage
            self.make_train_function(force=True)  # the step below is traced for one stage

    def training_callbacks(self) -> list:
        return [_StageSwitch()]

    def _classification(self, logits, rows):
        return losses.classification(logits, rows, self.multi_label)

    def train_step(self, data: Any) -> dict:
        if self._pool is None:
            raise ValueError("DSH-GANs keeps its labelled items in adapt(x, y); tfhash.fit calls it before training.")
        x, y, _ = distribution.unpack_batch(data)
        x = tf.cast(x, tf.float32)
        stage = self._stage or self.stage_of_epoch(0)
        logs = self._stage_one(x, y) if stage == 1 else self._stage_two(x)
        return self.update_trackers({"stage": tf.constant(float(stage)), **logs})

    def _average_over(self, values, mask):
        """Mean of ``values`` over the masked items of the global batch; the gradient reaches this replica's own
        items only (the optimizer sums the replicas' gradients)."""
        context = tf.distribute.get_replica_context()
        count = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(mask))
        return distribution.replica_total(tf.reduce_sum(values * mask) / tf.maximum(count, 1.0))

    def _stage_one(self, x, y):
        """Sec. 3.2: D on l_a + l_c over real and synthetic items, G on l_c - l_a."""
        local = tf.shape(x)[0]
        step = self.scheme_optimizers["discriminator"].iterations
        ones = tf.ones([local])
        if self.label_sampling == "labelled":
            classified_x, fake_rows = self._queries(local, self._stateless_seed(step, 1))
            classified_rows = fake_rows
        else:
            fake_rows = classified_rows = label_vectors(y, self.num_classes)
            classified_x = x
        classified_mask = tf.cast(tf.reduce_any(classified_rows > 0, axis=1), tf.float32)
        fake_mask = tf.cast(tf.reduce_any(fake_rows > 0, axis=1), tf.float32)
        noise = distribution.batch_random(stateless.normal, [local, self.noise_dim], self._stateless_seed(step, 2))

        with tf.GradientTape(persistent=True) as tape:
            fake = self.generate(fake_rows, noise, training=True)
            real_features = self.discriminator(x)
            fake_features = self.discriminator(fake)
            classified_features = real_features if self.label_sampling == "batch" else self.discriminator(classified_x)
            fake_source = self.discriminator_source(fake_features)
            fake_class = self._classification(self.discriminator_class(fake_features), fake_rows)
            adversarial = (self._average_over(losses.binary_cross_entropy_logits(
                self.discriminator_source(real_features), 1.0), ones)
                + self._average_over(losses.binary_cross_entropy_logits(fake_source, 0.0), ones))
            classification = self._average_over(self._classification(
                self.discriminator_class(classified_features), classified_rows), classified_mask)
            if self.classify_synthetic:
                classification += self._average_over(fake_class, fake_mask)
            d_loss = self.weight_adversarial * adversarial + self.weight_classification * classification
            g_loss = (self.weight_adversarial
                      * self._average_over(losses.generator_adversarial(fake_source, self.generator_loss), ones)
                      + self.weight_classification * self._average_over(fake_class, fake_mask))
        self.minimise(tape, d_loss, "discriminator")
        self.minimise(tape, g_loss, "generator")
        del tape
        zero = tf.constant(0.0)
        return {"d_loss": d_loss, "g_loss": g_loss, "triplet": zero, "adversarial": adversarial,
                "classification": classification, "active_triplets": zero, "bit_freq_min": zero, "bit_freq_max": zero}

    def _stage_two(self, x):
        """Sec. 3.3-3.6: the shared network on Eq. 8, G on Eq. 9, over triplets of labelled queries."""
        local = tf.shape(x)[0]
        step = self.scheme_optimizers["shared"].iterations
        queries, rows = self._queries(local, self._stateless_seed(step, 11))
        negative_items, valid = self._negative(rows, self._stateless_seed(step, 12))
        negative_rows = tf.gather(self._pool["rows"], negative_items)
        real_pair = []
        if not self.use_generator or self.real_triplets:
            real_pair = [self._real_positive(rows, self._stateless_seed(step, 14)),
                         tf.gather(self._pool["x"], negative_items)]
        with tf.GradientTape(persistent=True) as tape:
            # Slots of local items each: the queries, then (positive, negative) pairs, synthetic first.
            images, is_real = [queries], [1.0]
            if self.use_generator:
                # One draw per role, so each query's noise is the same however the batch is split across replicas.
                noise = tf.concat([distribution.batch_random(stateless.normal, [local, self.noise_dim],
                                                             self._stateless_seed(step, salt)) for salt in (13, 15)], 0)
                synthetic = self.generate(tf.concat([rows, negative_rows], 0), noise, training=True)
                images += [synthetic[:local], synthetic[local:]]
                is_real += [0.0, 0.0]
            images += real_pair
            is_real += [1.0] * len(real_pair)
            slots = len(images)
            features = self.shared_backbone(tf.concat(images, 0), training=self.backbone_learns)
            codes = tf.split(self.hash_stream(features), slots)
            all_valid = tf.tile(valid, [slots])
            ranking = [losses.triplet_ranking(codes[0], codes[k], codes[k + 1], self.margin)
                       for k in range(1, slots, 2)]
            triplet = tf.add_n([self._average_over(r, valid) for r in ranking]) / len(ranking)
            all_rows = tf.concat([rows] + [rows, negative_rows] * (len(ranking)), 0)
            classification = self._average_over(self._classification(self.class_stream(features), all_rows),
                                                all_valid)
            shared_loss = self.weight_triplet * triplet + self.weight_classification * classification
            adversarial = tf.constant(0.0)
            if self.use_generator:
                source = tf.split(self.source_stream(features), slots)
                per_item = tf.concat([losses.binary_cross_entropy_logits(logits, real)
                                      for logits, real in zip(source, is_real)], 0)
                adversarial = self._average_over(per_item, all_valid)  # Eq. 4: a mean over the triplet's images
                shared_loss += self.weight_adversarial * adversarial
                # Eq. 9: G's images should pass for real (its share of the images' mean), keep the ranking and
                # the classes; only the synthetic slots depend on G.
                fooled = tf.concat([losses.generator_adversarial(source[k], self.generator_loss) for k in (1, 2)], 0)
                g_loss = (self.weight_triplet * triplet
                          + self.weight_adversarial * self._average_over(fooled, tf.tile(valid, [2])) * 2.0 / slots
                          + self.weight_classification * classification)
        g_value = tf.constant(0.0)
        if self.use_generator and self.generator_in_stage_two:
            self.minimise(tape, g_loss, "generator")
            g_value = g_loss
        self.minimise(tape, shared_loss, "shared")
        del tape
        active = tf.cast(ranking[0] > 0, tf.float32)
        return {"d_loss": tf.constant(0.0), "g_loss": g_value, "triplet": triplet, "adversarial": adversarial,
                "classification": classification, "active_triplets": self._average_over(active, valid),
                **distribution.code_statistics(codes[0], self.threshold)}
