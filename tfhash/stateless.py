"""Stateless random draws that a training step gives alike with and without XLA.

``tf.random.stateless_uniform`` and ``stateless_normal`` return other floats once XLA compiles them with a
seed computed in the graph (the case of every training step, whose seeds hold the step counter): XLA turns
Philox's bits into floats its own way. Philox's integer draws agree bit for bit, so the floats here are
made from them with exact arithmetic (uniform) and Box-Muller (normal), and a step compiled by XLA trains
like the same step without it. The signatures follow ``tf.random.stateless_uniform`` / ``stateless_normal``.
"""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf

_MANTISSA = 24  # float32 holds every multiple of 2**-24 in [0, 1) exactly


def _unit_uniform(shape, seed) -> tf.Tensor:
    """Floats in [0, 1), multiples of 2**-24, from Philox's integer draws."""
    ints = tf.random.stateless_uniform(shape, seed, minval=0, maxval=1 << _MANTISSA, dtype=tf.int32, alg="philox")
    return tf.cast(ints, tf.float32) * (2.0**-_MANTISSA)


def uniform(shape: Any, seed: tf.Tensor, minval: float | int = 0, maxval: float | int | None = None,
            dtype: tf.DType = tf.float32) -> tf.Tensor:
    """Like ``tf.random.stateless_uniform``: floats in [minval, maxval) (maxval defaults to 1), or integers
    in [minval, maxval) for an integer ``dtype`` (Philox's own integer draw, already alike under XLA)."""
    dtype = tf.as_dtype(dtype)
    if dtype.is_integer:
        return tf.random.stateless_uniform(shape, seed, minval=minval, maxval=maxval, dtype=dtype, alg="philox")
    maxval = 1.0 if maxval is None else maxval
    unit = _unit_uniform(shape, seed)
    return tf.cast(minval + (maxval - minval) * unit, dtype)


def normal(shape: Any, seed: tf.Tensor, mean: float = 0.0, stddev: float = 1.0,
           dtype: tf.DType = tf.float32) -> tf.Tensor:
    """Like ``tf.random.stateless_normal``: Box-Muller on two uniform draws per value.

    The draws of value ``i`` depend only on ``i``'s position in ``shape``, so a slice of a bigger draw
    equals the same rows drawn by another replica from the same seed and shape."""
    shape = tf.convert_to_tensor(shape, tf.int32)
    pair = _unit_uniform(tf.concat([[2], shape], 0), seed)
    radius = tf.sqrt(-2.0 * tf.math.log(1.0 - pair[0]))  # 1 - u lies in (0, 1]: the log is finite
    values = radius * tf.cos((2.0 * math.pi) * pair[1])
    return tf.cast(mean + stddev * values, dtype)
