"""GreedyHash, unsupervised variant (Su et al., NeurIPS 2018).

A deep non-adversarial baseline: an encoder (backbone -> dense K) gives h, the codes are b = sign(h) in the
forward pass with the identity's gradient in the backward pass (the paper's "greedy" update), and the loss
is

    mean over pairs (cos(b_i, b_j) - cos(t_i, t_j))^2 + weight_penalty * mean ||h| - 1|^3,

where the pairs are the first and second halves of the batch (item i with item i + N/2) and t are target
features whose cosine structure the codes must keep. Codes at inference are [h >= 0].

Choices where the paper does not fit this library (each an argument):

* **Targets and backbone.** The paper's targets are the features of an ImageNet-pretrained VGG-16 (fc7),
  frozen, the same features the hash layer reads. Pretrained weights cannot be assumed here, and a
  backbone trained from scratch would shape its own targets (collapsing them is the easy minimum), so by
  default (``target="inputs"``) the targets are the items themselves, centred by the training mean, and
  the small backbone of :func:`tfhash.schemes.backbones.default_backbone` learns from scratch with the
  hash layer. ``target="backbone"`` with a pretrained ``backbone`` and ``train_backbone=False`` is the
  paper's setting.
* **Pairs under a strategy** are those of the global batch (halves of the batch every replica sees
  together): each replica computes the loss of all global pairs with its own codes live.
* **Inputs**: any item shape (images or feature vectors); the default backbone is convolutional for 28x28 /
  32x32 images and dense otherwise.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfhash import codes as codes_lib
from tfhash import distribution, losses
from tfhash.encoding import item_chunks
from tfhash.schemes import backbones, settings
from tfhash.schemes.base import HashingScheme, SchemeSpec
from tfhash.schemes.layers import OPTIMIZERS, OUTPUT_DTYPE
from tfhash.schemes.presets import Preset, named
from tfhash.schemes.registry import register

TARGETS = ("inputs", "backbone")


@register("greedyhash")
class GreedyHash(HashingScheme):
    """GreedyHash (NeurIPS 2018), unsupervised: a sign-and-identity-gradient baseline.

    Args:
        bits: code length K.
        input_shape: one item's shape (images in [0, 1]).
        seed: seeds initialisation and training order.
        backbone: ``None`` (the small network from scratch), the name of a ``keras.applications`` model
            (``tfhash.schemes.backbones.APPLICATIONS``: ``"mobilenet_v3_small"``, ``"efficientnet_v2_b0"``,
            ``"resnet50"``, ``"vgg16"``, ...; colour images, its own preprocessing) or a ``keras.Model`` mapping
            items to ``[n, d]`` features.
        backbone_weights: ``None`` or ``"imagenet"`` (a named backbone's pretrained weights, downloaded by Keras).
        train_backbone: whether the backbone learns with the hash layer; ``None`` (default): frozen when pretrained
            (``backbone_weights`` set, as the paper freezes its VGG-16), learning otherwise.
        target: ``"inputs"`` (centred items) or ``"backbone"`` (the backbone's features, held fixed in the
            loss) as the cosine structure to keep.
        weight_penalty: weight of the cubic penalty (authors' code: 0.1).
        optimizer_type: ``"sgd"`` (momentum 0.9, weight decay 5e-4, as the authors' code) or ``"adam"``.
        learning_rate: (authors' code: 1e-4 with SGD).
    """

    loss_names = ("loss", "structure", "penalty", "bit_freq_min", "bit_freq_max")
    input_kind = "images"
    threshold = codes_lib.TANH_THRESHOLD
    spec = SchemeSpec(
        encoder_players=("encoder",),
        paper_baselines=("lsh", "itq", "sh"),
        deep_baseline=True,
    )
    presets = named(
        paper=Preset(
            description="The paper's unsupervised settings (Su et al. 2018, Sec. 4; the authors' released code): "
                        "penalty weight 0.1, SGD with momentum 0.9, learning rate 1e-4 and weight decay 5e-4, batch "
                        "32, 60 epochs. Their frozen pretrained VGG-16 (fc7 as targets) is replaced by the small "
                        "backbone trained from scratch with the items as targets. The constructor defaults.",
            epochs=60, batch_size=32, selected_on="paper (Sec. 4)"),
        scratch=Preset(
            description="For the backbone trained from scratch: Adam with learning rate 1e-3 (SGD at 1e-4 is meant "
                        "for a pretrained backbone and a hash layer alone), penalty weight 0.1, 10 epochs of batches "
                        "of 128. Not a setting of the paper.",
            hyperparameters={"optimizer_type": "adam", "learning_rate": 1e-3},
            epochs=10, batch_size=128,
            selected_on="validation queries: REPRODUCTION.md#preset-greedyhash-scratch"),
    )
    default_preset = "scratch"

    hyperparameter_rules = {
        **backbones.RULES,
        "target": settings.Choice(TARGETS), "weight_penalty": settings.NonNegative(),
        "optimizer_type": settings.Choice(OPTIMIZERS), "learning_rate": settings.NonNegative(),
    }

    @classmethod
    def check_combination(cls, hyperparameters: dict) -> None:
        if hyperparameters["target"] == "backbone" and backbones.trains_backbone(
                hyperparameters["train_backbone"], hyperparameters["backbone_weights"]):
            raise ValueError("`target`='backbone' needs train_backbone=False: a backbone that learns would shape its "
                             "own targets. Use target='inputs' to train the backbone.")

    def __init__(self, bits=32, input_shape=None, seed=0, backbone=None, backbone_weights=None, train_backbone=None,
                 target="inputs",
                 weight_penalty=0.1, optimizer_type="sgd", learning_rate=1e-4, **kwargs):
        super().__init__(bits=bits, input_shape=input_shape, seed=seed, **kwargs)
        self.feature_network = self._build_backbone("backbone")
        if not self.backbone_learns:  # its features are fixed: computed once per fit, not once per epoch
            self.features_once, self.features_once_needs_items = "feature_network", self.target == "inputs"
        width = self.feature_network.output_shape[-1]
        self.hash_layer = keras.layers.Dense(self.bits, name="hash_layer", dtype=OUTPUT_DTYPE)
        self.hash_layer.build((None, width))
        size = int(np.prod(self.item_shape))
        # Training mean of the items (the "inputs" targets are centred by it); set by adapt.
        self.input_mean = self.add_weight(shape=(size,), initializer="zeros", trainable=False, name="input_mean")

    # --- networks ------------------------------------------------------------------------------

    def adapt(self, x: Any, y: Any = None) -> None:
        """Keeps the training items' mean, which centres the ``"inputs"`` targets; labels are not used."""
        if x is None or self.target != "inputs":
            return
        total, count = None, 0
        for batch in item_chunks(x):
            batch = batch.astype(np.float64).reshape(len(batch), -1)
            total = batch.sum(axis=0) if total is None else total + batch.sum(axis=0)
            count += len(batch)
        self.input_mean.assign((total / count).astype(np.float32))

    def encode_graph(self, inputs: tf.Tensor) -> tf.Tensor:
        return self.hash_layer(self.feature_network(inputs, training=False))

    def players(self) -> dict:
        variables = self.hash_layer.trainable_variables
        if self.backbone_learns:
            variables = self.feature_network.trainable_variables + variables
        return {"encoder": variables}

    def default_optimizer(self, player: str, total_steps: int | None) -> keras.optimizers.Optimizer:
        if self.optimizer_type == "adam":
            return keras.optimizers.Adam(self.learning_rate, name=f"{player}_adam")
        return keras.optimizers.SGD(self.learning_rate, momentum=0.9, weight_decay=5e-4, name=f"{player}_sgd")

    # --- training ------------------------------------------------------------------------------

    def train_step(self, data: Any) -> dict:
        given = data.get("features") if isinstance(data, dict) else None  # a frozen backbone's, computed once
        x = None if given is not None and not self.features_once_needs_items else tf.cast(
            distribution.unpack_batch(data)[0], tf.float32)  # unsupervised: labels are never used
        step_context = distribution.step_context(x if given is None else given)
        with tf.GradientTape() as tape:
            features = given if given is not None else self.feature_network(x, training=self.backbone_learns)
            outputs = self.hash_layer(features)
            codes = losses.straight_through_sign(outputs)
            if self.target == "inputs":
                targets = tf.reshape(x, [tf.shape(x)[0], -1]) - self.input_mean
            else:
                targets = tf.stop_gradient(tf.cast(features, tf.float32))
            all_codes, all_targets = distribution.global_rows(codes), distribution.global_rows(targets)
            half = step_context.global_batch // 2
            structure = tf.reduce_mean(losses.cosine_structure(all_codes[:half], all_codes[half:2 * half],
                                                               all_targets[:half], all_targets[half:2 * half]))
            penalty = losses.cubic_penalty(outputs)
            loss = structure + self.weight_penalty * step_context.average(penalty)
        self.minimise(tape, loss, "encoder")

        return self.update_trackers({
            "loss": structure + self.weight_penalty * tf.reduce_mean(penalty), "structure": structure,
            "penalty": tf.reduce_mean(penalty), **distribution.code_statistics(outputs, self.threshold),
        })
