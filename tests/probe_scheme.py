"""A test-only scheme that trains on labels and item indices, to check what ``tfhash.fit`` delivers.

Each training item i owns a row of ``table``; one SGD step with learning rate 1 on
0.5 * ||table[i] - (y_i, mean(x_i))||^2 sets that row to the label and the item's mean value. After one
epoch (every item visited once) ``table`` shows, row by row, which label and which item reached the step
under each index -- on any replica, since each replica's gradient touches only its own rows.
"""

import keras
import numpy as np
import tensorflow as tf

from tfhash import distribution
from tfhash.schemes import settings
from tfhash.schemes.base import HashingScheme
from tfhash.schemes.presets import Preset, named


class LabelIndexProbe(HashingScheme):
    key = "label_index_probe"  # not registered: passed to tfhash.fit as a class
    input_kind = "features"
    needs_labels = True
    needs_indices = True
    loss_names = ("probe",)
    presets = named(paper=Preset("One SGD step per batch with learning rate 1 (a probe, not a paper).", epochs=1,
                                 batch_size=16))

    hyperparameter_rules = {"num_items": settings.PositiveInt()}

    def __init__(self, bits=8, input_shape=None, seed=0, num_items=64, **kwargs):
        super().__init__(bits=bits, input_shape=input_shape, seed=seed, **kwargs)
        self.head = keras.layers.Dense(self.bits, activation="sigmoid", name="head")
        self.head(keras.ops.zeros((1, int(np.prod(self.item_shape)))))
        self.table = self.add_weight(shape=(self.num_items, 2), initializer="zeros", name="table")
        self.adapted = None

    def players(self):
        return {"head": self.head.trainable_variables, "table": [self.table]}

    def default_optimizer(self, player, total_steps):
        return keras.optimizers.SGD(1.0, name=f"{player}_sgd")

    def adapt(self, x, y=None):
        self.adapted = (np.asarray(x).copy(), None if y is None else np.asarray(y).copy())

    def encode_graph(self, inputs):
        return self.head(keras.ops.reshape(inputs, (-1, int(np.prod(self.item_shape)))))

    def train_step(self, data):
        x, y, index = distribution.unpack_batch(data)
        target = tf.stack([tf.cast(y, tf.float32), tf.reduce_mean(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)], 1)
        with tf.GradientTape() as tape:
            loss = 0.5 * tf.reduce_sum(tf.square(tf.gather(self.table, index) - target))
        gradient = tape.gradient(loss, [self.table])
        self.scheme_optimizers["table"].apply(gradient, [self.table])
        return self.update_trackers({"probe": loss})


def expected_table(x, y):
    return np.stack([np.asarray(y, np.float32), np.asarray(x, np.float32).reshape(len(x), -1).mean(axis=1)], 1)
