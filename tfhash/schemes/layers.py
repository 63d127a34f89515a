"""Layers shared by the schemes' networks."""

import keras
from keras import ops


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

    def build(self, input_shape):
        self.direction = self.add_weight(name="direction", shape=(input_shape[-1], self.units),
                                         initializer="glorot_uniform")
        self.scale = self.add_weight(name="scale", shape=(self.units,), initializer="ones")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros") if self.use_bias else None

    @property
    def kernel(self):
        return self.direction * (self.scale / ops.sqrt(ops.sum(ops.square(self.direction), axis=0) + 1e-12))

    def call(self, inputs):
        outputs = ops.matmul(inputs, self.kernel)
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs)

    def get_config(self):
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

    def build(self, input_shape):
        shape = (self.kernel_size, self.kernel_size, input_shape[-1], self.filters)
        self.direction = self.add_weight(name="direction", shape=shape, initializer="glorot_uniform")
        self.scale = self.add_weight(name="scale", shape=(self.filters,), initializer="ones")
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    @property
    def kernel(self):
        norm = ops.sqrt(ops.sum(ops.square(self.direction), axis=(0, 1, 2)) + 1e-12)
        return self.direction * (self.scale / norm)

    def call(self, inputs):
        outputs = ops.conv(inputs, self.kernel, strides=self.strides, padding=self.padding) + self.bias
        return self.activation(outputs)

    def get_config(self):
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

    def call(self, inputs):
        flat = keras.ops.reshape(keras.ops.cast(inputs, "float32"), (-1, self.features))
        return (flat - self.mean) / self.scale

    def get_config(self):
        return {**super().get_config(), "features": self.features}
