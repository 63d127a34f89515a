"""Replica arithmetic for training steps under any ``tf.distribute`` strategy (and without one).

A training step sees its replica's share of the global batch. Losses are means over the global batch (the
optimizer sums the replicas' gradients), batch statistics are gathered across replicas, and random values
are drawn so that each example gets the same ones however the batch is split. ``tfhash.fit`` drops the
incomplete last batch, so replicas always hold equal shares.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf


class StepContext:
    """What a training step needs to know of the distribution, for this replica's share of the batch.

    Attributes:
        replicas: replicas in sync (1 without a strategy).
        local_batch: items on this replica.
        global_batch: items over all replicas.
    """

    def __init__(self, local_batch):
        self.replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        self.local_batch = local_batch
        self.global_batch = local_batch * self.replicas

    def average(self, per_example: tf.Tensor) -> tf.Tensor:
        """Mean over the global batch of per-example values; the optimizer sums the replicas' gradients."""
        return tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch)


def step_context(x: tf.Tensor) -> StepContext:
    """The :class:`StepContext` of a training step on this replica's items ``x``."""
    return StepContext(tf.shape(x)[0])


def unpack_batch(data: Any) -> tuple:
    """``(x, y, index)`` of a training batch (a dict, an ``(x, y)`` tuple or a tensor); missing parts are None."""
    if isinstance(data, dict):
        return data["x"], data.get("y"), data.get("index")
    if isinstance(data, (tuple, list)):
        return data[0], (data[1] if len(data) > 1 else None), None
    return data, None, None


def replica_total(local_part: tf.Tensor) -> tf.Tensor:
    """The sum of ``local_part`` over replicas as its value, with the gradient of this replica's part only
    (the optimizer sums the replicas' gradients)."""
    context = tf.distribute.get_replica_context()
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(local_part))
    return local_part + tf.stop_gradient(total - local_part)


def global_batch_mean(local_values: tf.Tensor) -> tf.Tensor:
    """Mean over the global batch (every replica's examples) of per-example values ``[local batch, ...]``.

    Batch statistics (bit frequencies, feature means) must see the whole batch under a strategy; the
    gradient reaches this replica's own examples only, as each replica differentiates its share.
    """
    context = tf.distribute.get_replica_context()
    global_batch = tf.cast(tf.shape(local_values)[0] * context.num_replicas_in_sync, local_values.dtype)
    return replica_total(tf.reduce_sum(local_values, axis=0) / global_batch)


def global_rows(local_rows: tf.Tensor) -> tf.Tensor:
    """``[global batch, ...]`` rows of every replica in replica order, with this replica's rows live
    (differentiable) and the others' fixed. A loss over all of them computed on every replica then gives,
    summed by the optimizer across replicas, one device's gradient."""
    context = tf.distribute.get_replica_context()
    if context.num_replicas_in_sync == 1:
        return local_rows
    gathered = context.all_gather(tf.stop_gradient(local_rows), axis=0)
    local = tf.shape(local_rows)[0]
    start = tf.cast(context.replica_id_in_sync_group, tf.int32) * local
    return tf.concat([gathered[:start], local_rows, gathered[start + local:]], axis=0)


def batch_random(draw: Callable, local_shape: Any, seed: tf.Tensor, **kwargs: Any) -> tf.Tensor:
    """Per-example random values ``[local batch, ...]`` for this replica's share of the global batch.

    Every replica draws the whole global batch's values from the same seed and keeps its own rows, so each
    example gets the same noise however the batch is split across replicas (one device and two replicas
    train alike), while different replicas hold different values.

    Args:
        draw: a stateless random op, e.g. ``tfhash.stateless.normal`` (alike with and without XLA).
        local_shape: shape of this replica's values (first dimension: its batch share).
        seed: the stateless seed, shape [2].
        **kwargs: passed to ``draw``.
    """
    context = tf.distribute.get_replica_context()
    replicas = 1 if context is None else context.num_replicas_in_sync
    replica_id = 0 if context is None else context.replica_id_in_sync_group
    local_shape = tf.convert_to_tensor(local_shape, tf.int32)
    local = local_shape[0]
    values = draw(tf.concat([[local * replicas], local_shape[1:]], 0), seed, **kwargs)
    start = tf.cast(replica_id, tf.int32) * local
    return values[start:start + local]


def code_statistics(outputs: tf.Tensor, threshold: float) -> dict:
    """The bit-frequency logs every scheme reports: the least and most frequent bit over the global batch."""
    frequencies = global_batch_mean(tf.cast(outputs >= threshold, tf.float32))
    return {"bit_freq_min": tf.reduce_min(frequencies), "bit_freq_max": tf.reduce_max(frequencies)}


def multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True under a MultiWorkerMirroredStrategy whose cluster has more than one task."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    tasks = strategy.cluster_resolver.cluster_spec().as_dict()
    return sum(len(addresses) for addresses in tasks.values()) > 1
