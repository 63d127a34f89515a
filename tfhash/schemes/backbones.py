"""Feature networks the schemes with a ``backbone`` argument share: the small network from scratch, and the
checks and rebuilding rules for a user's ``keras.Model`` (e.g. one with pretrained weights)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


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


def describe_backbone(value: Any) -> str | None:
    """``backbone`` as messages and checkpoints name it: ``None`` or ``"model NAME"`` for a user's model."""
    return value if value is None or isinstance(value, str) else f"model {value.name}"


def check_backbone(value: Any) -> None:
    """Raises ``ValueError`` unless ``value`` is a valid ``backbone`` argument; returns it."""
    if not (value is None or isinstance(value, keras.Model) or (isinstance(value, str) and value.startswith("model "))):
        raise ValueError(f"`backbone` must be None (the default network) or a keras.Model mapping items to [n, d] "
                         f"features, got {type(value).__name__}.")
    return value


def build_backbone(value: Any, item_shape: tuple, name: str, initializer: Any = "glorot_uniform") -> keras.Model:
    """The feature network meant by ``backbone``: the user's model (checked to give ``[n, d]`` features) or,
    for ``None``, :func:`default_backbone`. A recorded name (``"model NAME"``) cannot be rebuilt: the model
    itself must be passed again."""
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
