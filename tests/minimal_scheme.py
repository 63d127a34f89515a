"""The smallest scheme the shared suite accepts, as docs/adding_a_scheme.md builds it: one player, one loss.

A linear hash layer whose codes keep the cosine structure of the items they encode (GreedyHash's loss on raw
items). Not registered globally: the shared suite registers it for its own tests only.
"""

import keras
import tensorflow as tf

from tfhash import distribution, losses
from tfhash.schemes import settings
from tfhash.schemes.base import HashingScheme, SchemeSpec
from tfhash.schemes.layers import OUTPUT_DTYPE
from tfhash.schemes.presets import Preset, named


class MinimalHash(HashingScheme):
    """Codes ``sigmoid(W x + b) >= 0.5`` trained so that code cosines follow item cosines.

    Args:
        learning_rate: Adam's learning rate.
    """

    key = "minimal"
    loss_names = ("loss", "bit_freq_min", "bit_freq_max")
    spec = SchemeSpec(encoder_players=("encoder",), deep_baseline=True)
    presets = named(paper=Preset("Adam at 1e-3, 5 epochs of batches of 64 (a demonstration).", epochs=5,
                                 batch_size=64))
    hyperparameter_rules = {"learning_rate": settings.Positive()}

    def __init__(self, bits=32, input_shape=None, seed=0, learning_rate=1e-3, **kwargs):
        super().__init__(bits=bits, input_shape=input_shape, seed=seed, **kwargs)
        self.hash_layer = keras.Sequential([keras.Input(self.item_shape), keras.layers.Flatten(),
                                            keras.layers.Dense(self.bits, activation="sigmoid", dtype=OUTPUT_DTYPE)])

    def players(self):
        return {"encoder": self.hash_layer.trainable_variables}

    def default_optimizer(self, player, total_steps):
        return keras.optimizers.Adam(self.learning_rate, name=f"{player}_adam")

    def encode_graph(self, inputs):
        return self.hash_layer(inputs)

    def train_step(self, data):
        x, _, _ = distribution.unpack_batch(data)
        x = tf.cast(x, tf.float32)
        half = distribution.step_context(x).global_batch // 2  # pairs: item i with item i + N/2 of the global batch
        with tf.GradientTape() as tape:
            probabilities = self.hash_layer(x)
            codes = distribution.global_rows(losses.straight_through_sign(probabilities - 0.5))
            items = distribution.global_rows(tf.reshape(x, [tf.shape(x)[0], -1]))
            loss = tf.reduce_mean(losses.cosine_structure(codes[:half], codes[half:2 * half],
                                                          items[:half], items[half:2 * half]))
        self.minimise(tape, loss, "encoder")
        return self.update_trackers({"loss": loss, **distribution.code_statistics(probabilities, self.threshold)})
