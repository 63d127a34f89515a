"""Run in a subprocess by test_distribution.py: TF's devices must be set before TF starts.

    python tests/distributed_helper.py mirrored OUT.json      # default vs MirroredStrategy, 2 CPU devices
    python tests/distributed_helper.py mirrored_sigah OUT.json # the same for SiGAH
    python tests/distributed_helper.py replica_noise OUT.json # noise drawn by each replica
    python tests/distributed_helper.py worker OUT.json        # one MultiWorkerMirroredStrategy worker (TF_CONFIG)
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

if sys.argv[1] != "worker":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import tfhash  # noqa: E402
from tfhash.schemes.hashgan import HashGAN  # noqa: E402


class FixedInputsHashGAN(HashGAN):
    """Generator inputs that do not depend on the replica or the batch split (constant rows), so one
    device and two replicas compute the same step and only loss aggregation can differ."""

    def _sample_generator_inputs(self, batch, seed):
        noise = tf.fill([batch, self.noise_dim], 0.5)
        bits01 = tf.tile(tf.constant([[1.0, 0.0] * (self.bits // 2)]), [batch, 1])
        return noise, bits01


def data():
    return np.random.default_rng(0).random((64, 8, 8, 1)).astype(np.float32)


def train(strategy, model_cls=FixedInputsHashGAN, epochs=2):
    x = data()
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(16, drop_remainder=True)
    with strategy.scope():
        model = model_cls(bits=8, input_shape=(8, 8, 1), seed=0, input_noise=0.0, transform_noise=0.0,
                          warmup_fraction=0.0)
        model.compile(total_steps=8)
    history = model.fit(dataset, epochs=epochs, verbose=0, shuffle=False)
    return {"history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
            "probabilities": model.predict_probabilities(x).tolist()}


def train_sigah(strategy, epochs=2):
    x = np.random.default_rng(0).normal(size=(64, 24)).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(16, drop_remainder=True)
    with strategy.scope():
        # The graph term is computed within each replica's share of the batch (Eq. 17 is in-batch), so it
        # differs between one device and two by design; without it the two runs must agree.
        model = tfhash.schemes.get("sigah")(bits=8, input_shape=(24,), seed=0, weight_graph=0.0)
        model.compile(total_steps=8)
    model.adapt(x)
    history = model.fit(dataset, epochs=epochs, verbose=0, shuffle=False)
    return {"history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
            "probabilities": model.predict_probabilities(x).tolist()}


def main():
    mode, out = sys.argv[1], sys.argv[2]
    if mode == "mirrored_sigah":
        result = {"default": train_sigah(tf.distribute.get_strategy()),
                  "mirrored": train_sigah(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))}
    elif mode == "mirrored":
        result = {"default": train(tf.distribute.get_strategy()),
                  "mirrored": train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))}
    elif mode == "replica_noise":
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = HashGAN(bits=8, input_shape=(8, 8, 1), seed=0)

        @tf.function
        def draw():
            return strategy.run(lambda: model._sample_generator_inputs(4, model._stateless_seed(tf.constant(0, tf.int64), 1))[0])

        per_replica = strategy.experimental_local_results(draw())
        result = {"replica_noise": [np.asarray(v).tolist() for v in per_replica]}
    else:  # one worker of a MultiWorkerMirroredStrategy cluster described by TF_CONFIG
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        x = data()
        hasher = tfhash.fit("hashgan", x, bits=8, epochs=1, batch_size=16, strategy=strategy, verbose=0)
        result = {"history": {k: [float(v) for v in vals] for k, vals in hasher.history.history.items()},
                  "probabilities": hasher.predict_probabilities(x).tolist(),
                  "replicas": strategy.num_replicas_in_sync}
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
