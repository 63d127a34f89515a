"""Layers and network choices shared by the schemes."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from tfhash import _validation

NETWORKS = ("auto", "mlp", "conv")
OPTIMIZERS = ("sgd", "adam")


# Under mixed precision (``mixed_float16``) the networks compute in float16, but layers whose outputs the
# losses read (codes, probabilities, logits, images compared with the inputs) compute in float32, as Keras
# advises for a model's outputs: sigmoid, log and mean terms keep their precision.
OUTPUT_DTYPE = "float32"


def batch_norm() -> keras.layers.Layer:
    """Batch normalisation whose statistics are those of the global batch under any ``tf.distribute`` strategy."""
    return keras.layers.BatchNormalization(synchronized=True)


def choose_network(item_shape: tuple, network: str = "auto", *, scheme: str, mlp_max_pixels: int | None = None) -> str:
    """``"conv"`` for 32x32 colour images (or 32x32 grey ones when asked), else ``"mlp"``.

    ``mlp_max_pixels``: the largest grey image the scheme's MLP takes (``None``: any item, flattened).
    """
    _validation.check_choice(network, "network", NETWORKS)
    shape = tuple(item_shape)
    is_conv_shape = len(shape) == 3 and shape[:2] == (32, 32) and shape[2] in (1, 3)
    fits_mlp = mlp_max_pixels is None or len(shape) in (1, 2) or (
        len(shape) == 3 and shape[2] == 1 and shape[0] * shape[1] <= mlp_max_pixels)
    if network == "conv" and not is_conv_shape:
        raise ValueError(f"`x` items must be 32x32 images ([n, 32, 32, 1 or 3]) for network='conv', got {shape}.")
    if network == "mlp" and not fits_mlp:
        raise ValueError(f"`x` items must be flat vectors or grey images of at most {mlp_max_pixels} pixels for "
                         f"network='mlp', got {shape}.")
    if network != "auto":
        return network
    if shape == (32, 32, 3):
        return "conv"
    if fits_mlp:
        return "mlp"
    raise ValueError(
        f"`x` items fit neither {scheme} network: expected flat vectors [n, d], grey images of at most "
        f"{mlp_max_pixels} pixels [n, h, w, 1] (MLP) or 32x32 colour images [n, 32, 32, 3] (convolutional), "
        f"got {shape}.")


@keras.saving.register_keras_serializable(package="tfhash")
class WeightNormDense(keras.layers.Layer):
    """Dense layer with weight normalisation (Salimans & Kingma 2016): W = g * v / ||v||, per unit.

    The reparameterisation decouples each unit's scale from its direction; Improved-GAN and
    HashGAN (Sec. 4) use it to stabilise discriminator training.
    """

    def __init__(self, units, activation=None, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias

    def build(self, input_shape: tuple) -> None:
        self.direction = self.add_weight(name="direction", shape=(input_shape[-1], self.units),
                                         initializer="glorot_uniform")
        self.scale = self.add_weight(name="scale", shape=(self.units,), initializer="ones")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros") if self.use_bias else None

    @property
    def kernel(self) -> tf.Tensor:
        return self.direction * (self.scale / ops.sqrt(ops.sum(ops.square(self.direction), axis=0) + 1e-12))

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        outputs = ops.matmul(inputs, self.kernel)
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs)

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units,
                "activation": keras.activations.serialize(self.activation), "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package="tfhash")
class WeightNormConv2D(keras.layers.Layer):
    """2-D convolution with weight normalisation per output channel (see :class:`WeightNormDense`)."""

    def __init__(self, filters, kernel_size, strides=1, padding="same", activation=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.padding = padding
        self.activation = keras.activations.get(activation)

    def build(self, input_shape: tuple) -> None:
        shape = (self.kernel_size, self.kernel_size, input_shape[-1], self.filters)
        self.direction = self.add_weight(name="direction", shape=shape, initializer="glorot_uniform")
        self.scale = self.add_weight(name="scale", shape=(self.filters,), initializer="ones")
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    @property
    def kernel(self) -> tf.Tensor:
        norm = ops.sqrt(ops.sum(ops.square(self.direction), axis=(0, 1, 2)) + 1e-12)
        return self.direction * (self.scale / norm)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        outputs = ops.conv(inputs, self.kernel, strides=self.strides, padding=self.padding) + self.bias
        return self.activation(outputs)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding,
                "activation": keras.activations.serialize(self.activation)}


class Standardize(keras.layers.Layer):
    """Flattens items and applies a fixed ``(x - mean) / scale`` (non-trainable; set by the scheme's
    ``adapt`` from training statistics), so exported encoders standardise their inputs themselves."""

    def __init__(self, features, **kwargs):
        super().__init__(**kwargs)
        self.features = int(features)
        self.mean = self.add_weight(shape=(self.features,), initializer="zeros", trainable=False, name="mean")
        self.scale = self.add_weight(shape=(self.features,), initializer="ones", trainable=False, name="scale")

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        flat = keras.ops.reshape(keras.ops.cast(inputs, "float32"), (-1, self.features))
        return (flat - self.mean) / self.scale

    def get_config(self) -> dict:
        return {**super().get_config(), "features": self.features}
