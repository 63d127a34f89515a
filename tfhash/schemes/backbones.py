"""Feature networks the schemes with a ``backbone`` argument share: the small network from scratch, the
``keras.applications`` models a backbone may name (with their own preprocessing), and the checks and rebuilding
rules for a user's ``keras.Model`` (e.g. one with pretrained weights)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

from tfhash.schemes import settings


def leaky_relu(t: tf.Tensor) -> tf.Tensor:
    return keras.activations.leaky_relu(t, negative_slope=0.2)


def is_small_image(shape: tuple) -> bool:
    """28x28 or 32x32 images, which the convolutional backbone is sized for."""
    return len(shape) == 3 and shape[0] == shape[1] and shape[0] in (28, 32)


# Images with more pixels than this get the pooled convolutional network, whose size does not grow with theirs.
POOLED_ABOVE_PIXELS = 64 * 64


def is_large_image(shape: tuple) -> bool:
    """Images ``[h, w, c]`` of more than 64x64 pixels (photos), which the pooled network encodes."""
    return len(shape) == 3 and shape[0] * shape[1] > POOLED_ABOVE_PIXELS


def needs_low_resolution(shape: tuple) -> bool:
    """Photos for networks sized for small images (HashGAN's, BGAN's): colour images above 32x32 pixels, grey ones
    above 64x64, which those networks see as a 32x32 copy."""
    return len(shape) == 3 and (shape[0] * shape[1] > POOLED_ABOVE_PIXELS
                                or (shape[2] == 3 and shape[0] * shape[1] > 32 * 32))


def default_backbone(item_shape: tuple, name: str, initializer: Any = "glorot_uniform") -> keras.Model:
    """The small network from scratch: three strided 3x3 convolutions (32 / 64 / 128) and a dense layer of 256
    for 28x28 / 32x32 images; for images of more than 64x64 pixels, strided convolutions (32 / 64 / 128 / 256)
    down to at most 16x16, global average pooling and a dense layer of 256, so its size does not grow with the
    image's; two dense layers (512, 256) for any other item shape."""
    shape = tuple(item_shape)
    layers = [keras.Input(shape)]

    def convolution(filters):
        return keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation=leaky_relu,
                                   kernel_initializer=initializer)

    if is_small_image(shape):
        layers += [convolution(filters) for filters in (32, 64, 128)] + [keras.layers.Flatten()]
    elif is_large_image(shape):
        filters, side = 32, max(shape[0], shape[1])
        while True:
            layers.append(convolution(filters))
            side = (side + 1) // 2
            if side <= 16 and filters >= 128:
                break
            filters = min(2 * filters, 256)
        layers.append(keras.layers.GlobalAveragePooling2D())
    else:
        layers += [keras.layers.Flatten(),
                   keras.layers.Dense(512, activation=leaky_relu, kernel_initializer=initializer)]
    layers.append(keras.layers.Dense(256, activation=leaky_relu, kernel_initializer=initializer))
    return keras.Sequential(layers, name=name)


# The keras.applications models a backbone may name: their constructor and how they expect their pixels
# ("included": the model rescales 0-255 itself; "caffe": BGR with the ImageNet channel means subtracted).
APPLICATIONS = {
    "mobilenet_v3_small": ("MobileNetV3Small", "included"),
    "mobilenet_v3_large": ("MobileNetV3Large", "included"),
    "efficientnet_v2_b0": ("EfficientNetV2B0", "included"),
    "resnet50": ("ResNet50", "caffe"),
    "vgg16": ("VGG16", "caffe"),
}
# Set while a model is rebuilt to have its weights restored from a checkpoint: a named backbone's pretrained
# weights would only be overwritten, so they are not downloaded (a saved hasher loads offline).
_RESTORING = contextvars.ContextVar("restoring_backbone", default=False)
CAFFE_MEANS = (103.939, 116.779, 123.68)  # ImageNet's BGR channel means, as keras.applications' "caffe" mode
BACKBONE_WEIGHTS = (None, "imagenet")


@keras.saving.register_keras_serializable(package="tfhash")
class CaffePreprocessing(keras.layers.Layer):
    """RGB pixels in 0-255 to what ResNet50 and VGG16 were trained on: BGR, each channel's ImageNet mean removed."""

    def call(self, pixels: tf.Tensor) -> tf.Tensor:
        return keras.ops.flip(pixels, axis=-1) - keras.ops.convert_to_tensor(CAFFE_MEANS, dtype=pixels.dtype)


@contextlib.contextmanager
def restoring() -> Iterator[None]:
    """Builds named backbones without their pretrained weights, for a model whose weights a checkpoint restores."""
    token = _RESTORING.set(True)
    try:
        yield
    finally:
        _RESTORING.reset(token)


def named_backbone(name: str, item_shape: tuple, weights: str | None = None,
                   model_name: str = "backbone") -> keras.Model:
    """The ``keras.applications`` model ``name`` without its classifier, global-average pooled to ``[n, d]``
    features, taking images as the library passes them (floats in [0, 1]) and preprocessing them as the model
    was trained. ``weights="imagenet"`` downloads its pretrained weights (Keras caches them)."""
    constructor, mode = APPLICATIONS[name]
    if len(item_shape) != 3 or item_shape[-1] != 3:
        raise ValueError(f"`backbone`={name!r} takes colour images [height, width, 3], got items of shape "
                         f"{tuple(item_shape)}.")
    inputs = keras.Input(tuple(item_shape))
    pixels = keras.layers.Rescaling(255.0)(inputs)  # the library's [0, 1] back to the 0-255 the models expect
    options = {"include_preprocessing": True} if mode == "included" else {}
    if mode == "caffe":
        pixels = CaffePreprocessing()(pixels)
    weights = None if _RESTORING.get() else weights
    application = getattr(keras.applications, constructor)(include_top=False, weights=weights, pooling="avg",
                                                            input_shape=tuple(item_shape), **options)
    return keras.Model(inputs, application(pixels), name=model_name)


def describe_backbone(value: Any) -> str | None:
    """``backbone`` as messages and checkpoints name it: ``None`` or ``"model NAME"`` for a user's model."""
    return value if value is None or isinstance(value, str) else f"model {value.name}"


def check_backbone(value: Any) -> Any:
    """Raises ``ValueError`` unless ``value`` is a valid ``backbone`` argument; returns it."""
    named = isinstance(value, str) and (value in APPLICATIONS or value.startswith("model "))  # or recorded
    if not (value is None or named or isinstance(value, keras.Model)):
        got = repr(value) if isinstance(value, str) else type(value).__name__
        raise ValueError(f"`backbone` must be None (the default network), a keras.Model mapping items to [n, d] "
                         f"features or one of {sorted(APPLICATIONS)}, got {got}.")
    return value


def check_backbone_weights(value: Any) -> Any:
    if value not in BACKBONE_WEIGHTS:
        raise ValueError(f"`backbone_weights` must be None (random initial weights) or 'imagenet' (a named "
                         f"backbone's pretrained weights, downloaded by Keras), got {value!r}.")
    return value


def check_backbone_combination(hyperparameters: dict) -> None:
    """Weights belong to a named backbone only."""
    if hyperparameters["backbone_weights"] is not None and hyperparameters["backbone"] not in APPLICATIONS:
        raise ValueError(f"`backbone_weights`={hyperparameters['backbone_weights']!r} loads a named backbone's "
                         f"weights (one of {sorted(APPLICATIONS)}), got backbone="
                         f"{describe_backbone(hyperparameters['backbone'])!r}; a keras.Model brings its own.")


def check_fixed_backbone(hyperparameters: dict, scheme: str) -> None:
    """For schemes whose generator and discriminator work in a backbone's feature space: it stays fixed."""
    if hyperparameters["train_backbone"]:
        raise ValueError(f"`train_backbone`=True: {scheme}'s generator and discriminator work in the backbone's "
                         "feature space, which stays fixed; use train_backbone=None or False.")


def trains_backbone(train_backbone: bool | None, backbone_weights: str | None) -> bool:
    """``train_backbone=None`` (the default): a pretrained backbone stays frozen, as the papers use theirs; any
    other backbone (the small default network, a random named one, a user's model) learns with the head."""
    return backbone_weights is None if train_backbone is None else bool(train_backbone)


def build_backbone(value: Any, item_shape: tuple, name: str, initializer: Any = "glorot_uniform",
                   weights: str | None = None) -> keras.Model:
    """The feature network meant by ``backbone``: the user's model (checked to give ``[n, d]`` features), a
    named ``keras.applications`` model (:func:`named_backbone`, with ``weights``) or, for ``None``,
    :func:`default_backbone`. A recorded model (``"model NAME"``) cannot be rebuilt: the model itself must be
    passed again."""
    if isinstance(value, str) and value in APPLICATIONS:
        return named_backbone(value, item_shape, weights, name)
    if isinstance(value, keras.Model):
        features = value(keras.ops.zeros((1,) + tuple(item_shape)))
        if len(features.shape) != 2:
            raise ValueError(f"`backbone` must map items {tuple(item_shape)} to [n, d] features, got an output of "
                             f"shape {tuple(features.shape)}.")
        return value
    if value is None:
        return default_backbone(item_shape, name, initializer)
    raise ValueError(f"`backbone` {value!r} was a keras.Model at training: pass the same model "
                     "(hyperparameters={'backbone': model}) to rebuild it.")


@keras.saving.register_keras_serializable(package="tfhash")
class FeatureRange(keras.layers.Layer):
    """Each feature scaled to [0, 1] by the training items' range (:func:`adapt_feature_range`), clipped so a new
    item beyond that range stays in [0, 1]."""

    def build(self, input_shape: tuple) -> None:
        width = int(input_shape[-1])
        self.low = self.add_weight(shape=(width,), initializer="zeros", trainable=False, name="low")
        self.scale = self.add_weight(shape=(width,), initializer="ones", trainable=False, name="scale")

    def call(self, features: Any) -> Any:
        return keras.ops.clip((keras.ops.cast(features, "float32") - self.low) * self.scale, 0.0, 1.0)


def adapt_feature_range(model: keras.Model, features: Any) -> Any:
    """Sets the [0, 1] scaling of a scheme's backbone features (``HashingScheme._on_backbone_features``) from
    the training items' ``features``; returns them scaled."""
    features = tf.convert_to_tensor(features, tf.float32)
    low, high = tf.reduce_min(features, axis=0), tf.reduce_max(features, axis=0)
    model.feature_range.low.assign(low)
    model.feature_range.scale.assign(1.0 / tf.maximum(high - low, 1e-6))
    return model.feature_range(features).numpy()


# The hyperparameters every scheme with a backbone declares, checked alike.
RULES = {"backbone": settings.Checked(check_backbone), "backbone_weights": settings.Checked(check_backbone_weights),
         "train_backbone": settings.Optional(settings.Flag(strict=True))}
