"""CIBHash: unsupervised hashing with a contrastive information bottleneck (Qiu et al., IJCAI 2021).

A deep non-adversarial baseline: no generator, no discriminator. Each training step draws two random views
of every image (:mod:`tfhash.augment`), encodes both (backbone -> dense 1024 -> dense K -> sigmoid
probabilities p), binarises them with the straight-through sign of p - 0.5, and minimises

    NT-Xent(codes of view 1, codes of view 2; temperature tau) + beta * (KL(p1 || p2) + KL(p2 || p1)) / 2,

where the contrastive term treats the other view of the same image as the positive and the other 2N - 2
codes of the (global) batch as negatives, and each KL holds its second argument fixed (as the authors'
code does). Codes at inference are [p >= 0.5].

Choices where the paper is open or does not fit this library (each an argument):

* **Backbone.** The paper encodes images with an ImageNet-pretrained VGG-16, frozen, and trains only the
  two dense layers. Pretrained weights cannot be assumed here, so the default is the small network of
  :func:`tfhash.schemes.backbones.default_backbone` trained from scratch with the head
  (``train_backbone=True``); pass any ``keras.Model`` as ``backbone`` and ``train_backbone=False`` for the
  paper's setting.
* **Views.** The paper uses random resized crops, flips, colour jitter and greyscale on 224x224 colour
  images; :func:`tfhash.augment.augment` gives the small-image counterparts: translation, rotation and zoom
  for grey images, crop, flip and colour jitter for colour ones (strengths are arguments).
* **Batch normalisation before the sigmoid** (``head_batch_norm``, not in the paper). On pretrained
  features the items' codes differ from the first step. A backbone from scratch can start with every item on
  the same side of 0.5 in every bit; then all codes are equal, NT-Xent's gradient is exactly zero and
  training never leaves that point (measured on digits: loss log(2N - 1) from the first epoch, every bit
  constant). Normalising the last layer over the (global) batch splits every bit between items from the
  start.
* **Negatives under a strategy** are the codes of every replica's views (the global batch): each replica
  computes the loss of the whole global batch with its own codes live and the others' fixed, so the
  summed gradient equals one device's.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfhash import augment, distribution, losses
from tfhash.schemes import backbones, settings
from tfhash.schemes.base import HashingScheme, SchemeSpec
from tfhash.schemes.layers import OUTPUT_DTYPE
from tfhash.schemes.presets import Preset, named
from tfhash.schemes.registry import register

VIEW_SETTINGS = ("max_shift", "max_rotation", "max_zoom", "padding", "brightness", "contrast", "saturation")


@register("cibhash")
class CIBHash(HashingScheme):
    """CIBHash (IJCAI 2021), a contrastive, non-adversarial baseline.

    Args:
        bits: code length K.
        input_shape: one image's shape ``[h, w, c]``; values in [0, 1].
        seed: seeds initialisation and every view.
        backbone: ``None`` (the small network from scratch), the name of a ``keras.applications`` model
            (``tfhash.schemes.backbones.APPLICATIONS``: ``"mobilenet_v3_small"``, ``"efficientnet_v2_b0"``,
            ``"resnet50"``, ``"vgg16"``, ...; colour images, its own preprocessing) or a ``keras.Model`` mapping
            images to ``[n, d]`` features.
        backbone_weights: ``None`` or ``"imagenet"`` (a named backbone's pretrained weights, downloaded by Keras).
        train_backbone: whether the backbone learns with the head; ``None`` (default): frozen when pretrained
            (``backbone_weights`` set, as the paper freezes its VGG-16), learning otherwise.
        head_units: width of the hidden dense layer of the head (paper: 1024).
        head_batch_norm: synchronized batch normalisation before the sigmoid (see the module docstring).
        temperature: tau of NT-Xent (paper: 0.3).
        weight_kl: beta, the weight of the symmetric Bernoulli KL between the views (paper: 0.001).
        learning_rate: Adam's learning rate (authors' default: 1e-3).
        max_shift, max_rotation, max_zoom: view strengths for grey images (pixels, degrees, relative zoom).
        padding, brightness, contrast, saturation: view strengths for colour images (crop translation in
            pixels; colour jitter factors).
    """

    loss_names = ("loss", "contrastive", "kl", "bit_freq_min", "bit_freq_max")
    input_kind = "images"
    spec = SchemeSpec(
        encoder_players=("encoder",),
        paper_baselines=("lsh", "itq", "sh"),
        deep_baseline=True,
    )
    presets = named(
        paper=Preset(
            description="The paper's settings (Qiu et al. 2021, implementation details; the authors' released "
                        "defaults): temperature 0.3, KL weight 0.001, Adam with learning rate 1e-3, batch 64, 60 "
                        "epochs, a 1024-unit hidden layer. Their frozen pretrained VGG-16 is replaced by the small "
                        "backbone trained from scratch (no pretrained weights here). The constructor defaults.",
            epochs=60, batch_size=64, selected_on="paper (implementation details)"),
        scratch=Preset(
            description="For the backbone trained from scratch: temperature 0.6 and KL weight 0.02, so the views' "
                        "bits must also agree in probability (with the paper's 0.001 the codes separate items but "
                        "group few of a class; at 0.1-0.2 mnist-10k gains more but bits freeze and fashion-mnist-10k "
                        "collapses to constant codes), 10 epochs of batches of 128 (longer training lowered mAP) "
                        "at 9,000 training items, i.e. about 700 steps: larger sets train proportionally fewer "
                        "epochs (69,000 items: one epoch; ten lost a fifth of the mAP there). Not a setting of "
                        "the paper.",
            hyperparameters={"temperature": 0.6, "weight_kl": 0.02},
            epochs=10, batch_size=128, training_items=9000,
            selected_on="validation queries: REPRODUCTION.md#preset-cibhash-scratch"),
    )
    default_preset = "scratch"

    hyperparameter_rules = {
        **backbones.RULES,
        "head_units": settings.PositiveInt(), "head_batch_norm": settings.Flag(), "temperature": settings.Positive(),
        "weight_kl": settings.NonNegative(), "learning_rate": settings.NonNegative(),
        # The view strengths are checked together, by the augmentation policy they make.
        **{name: settings.Together() for name in VIEW_SETTINGS},
    }

    @staticmethod
    def _view_policy(values):
        return augment.Policy(**{name: values[name] for name in VIEW_SETTINGS})

    @classmethod
    def check_combination(cls, hyperparameters: dict) -> None:
        cls._view_policy(hyperparameters)

    def __init__(self, bits=32, input_shape=None, seed=0, backbone=None, backbone_weights=None, train_backbone=None,
                 head_units=1024,
                 head_batch_norm=False, temperature=0.3, weight_kl=1e-3, learning_rate=1e-3, max_shift=2.0,
                 max_rotation=10.0, max_zoom=0.1, padding=4, brightness=0.4, contrast=0.4, saturation=0.4, **kwargs):
        super().__init__(bits=bits, input_shape=input_shape, seed=seed, **kwargs)
        self.view_policy = self._view_policy(locals())
        if len(self.item_shape) != 3:
            raise ValueError(f"`x` items must be images [h, w, c] for cibhash (its views are image augmentations), "
                             f"got items of shape {self.item_shape}.")
        self.feature_network = self._build_backbone("backbone")
        width = self.feature_network.output_shape[-1]
        layers = [keras.Input((width,)), keras.layers.Dense(self.head_units, activation="relu"),
                  keras.layers.Dense(self.bits)]
        if self.head_batch_norm:
            layers.append(keras.layers.BatchNormalization(momentum=0.9, synchronized=True))  # global batch statistics
        self.head = keras.Sequential(layers + [keras.layers.Activation("sigmoid", dtype=OUTPUT_DTYPE)],
                                     name="hash_head")
        # Its views are warped by ImageProjectiveTransformV3, which has no XLA kernel: Keras keeps the step out
        # of XLA (with its warning) when jit_compile=True is asked for.
        self.supports_jit = False

    # --- networks ------------------------------------------------------------------------------

    def encode_graph(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        # A frozen backbone runs in inference mode: its batch statistics stay those it was trained with.
        features = self.feature_network(inputs, training=training and self.backbone_learns)
        return self.head(features, training=training)

    def players(self) -> dict:
        variables = self.head.trainable_variables
        if self.backbone_learns:
            variables = self.feature_network.trainable_variables + variables
        return {"encoder": variables}

    def default_optimizer(self, player: str, total_steps: int | None) -> keras.optimizers.Optimizer:
        return keras.optimizers.Adam(self.learning_rate, name=f"{player}_adam")

    # --- training ------------------------------------------------------------------------------

    def train_step(self, data: Any) -> dict:
        x, _, _ = distribution.unpack_batch(data)  # unsupervised: labels are never used
        x = tf.cast(x, tf.float32)
        step_context = distribution.step_context(x)
        step = self.scheme_optimizers["encoder"].iterations
        view_a = augment.augment(x, self._stateless_seed(step, 1), self.view_policy, draw=distribution.batch_random)
        view_b = augment.augment(x, self._stateless_seed(step, 2), self.view_policy, draw=distribution.batch_random)
        with tf.GradientTape() as tape:
            probabilities_a = self.encode_graph(view_a, training=True)
            probabilities_b = self.encode_graph(view_b, training=True)
            codes_a = losses.straight_through_sign(probabilities_a - 0.5)
            codes_b = losses.straight_through_sign(probabilities_b - 0.5)
            # The whole global batch's loss with this replica's codes live: the replicas' gradients sum to one
            # device's gradient.
            all_a, all_b = distribution.global_rows(codes_a), distribution.global_rows(codes_b)
            contrastive = tf.reduce_mean(losses.nt_xent(all_a, all_b, self.temperature))
            kl = (losses.bernoulli_kl(probabilities_a, tf.stop_gradient(probabilities_b))
                  + losses.bernoulli_kl(probabilities_b, tf.stop_gradient(probabilities_a))) / 2.0
            kl_loss = step_context.average(kl)
            loss = contrastive + self.weight_kl * kl_loss
        self.minimise(tape, loss, "encoder")

        return self.update_trackers({
            "loss": contrastive + self.weight_kl * kl_loss * tf.cast(step_context.replicas, tf.float32),
            "contrastive": contrastive, "kl": tf.reduce_mean(kl),
            **distribution.code_statistics(probabilities_a, self.threshold),
        })
