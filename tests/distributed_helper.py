"""Run in a subprocess by test_distribution.py: TF's devices must be set before TF starts.

    python tests/distributed_helper.py mirrored SCHEME OUT.json  # default vs MirroredStrategy, 2 CPU devices
    python tests/distributed_helper.py probe - OUT.json          # labels and indices under MirroredStrategy
    python tests/distributed_helper.py replica_noise SCHEME OUT.json  # noise drawn by each replica
    python tests/distributed_helper.py worker SCHEME OUT.json    # one MultiWorkerMirroredStrategy worker (TF_CONFIG)
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import tensorflow as tf

if sys.argv[1] != "worker":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import tfhash
from tests import scheme_inputs as inputs
from tests.helpers import scheme_labels
from tests.probe_scheme import LabelIndexProbe, expected_table
from tfhash import stateless


def data(scheme_cls, n=64):
    return np.random.default_rng(0).random((n,) + tuple(inputs.input_shape(scheme_cls))).astype(np.float32)


def train(name, strategy, epochs=1):
    """A short fit (4 steps) with every training noise on; terms computed per replica share (by design) are off.

    Short on purpose: Adam turns rounding-level differences in near-zero gradients (the two runs sum in other
    orders) into full-size steps, so longer runs drift apart for some seeds whatever the noise (HashGAN, 8
    steps: g_loss 4.9% apart at seed 2, 1e-6 at seeds 0 and 1). Each step agreeing is the property tested."""
    scheme_cls = tfhash.schemes.get(name)
    x = data(scheme_cls)
    hasher = tfhash.fit(name, x, scheme_labels(scheme_cls, len(x)), bits=8, epochs=epochs, batch_size=16, seed=0,
                        strategy=strategy, verbose=0,
                        **{**inputs.hyperparameters(scheme_cls), **scheme_cls.spec.replica_local_terms})
    return {"history": {k: [float(v) for v in vals] for k, vals in hasher.history.history.items()},
            "probabilities": hasher.predict_probabilities(x).tolist()}


def main():
    mode, name, out = sys.argv[1:4]
    two_devices = ["/cpu:0", "/cpu:1"]
    if mode == "mirrored":
        result = {"default": train(name, tf.distribute.get_strategy()),
                  "mirrored": train(name, tf.distribute.MirroredStrategy(two_devices))}
    elif mode == "probe":
        rng = np.random.default_rng(0)
        x = rng.normal(size=(64, 4)).astype(np.float32)
        y = rng.integers(-1, 5, size=64)
        hasher = tfhash.fit(LabelIndexProbe, x, y, bits=8, epochs=1, batch_size=16,
                            strategy=tf.distribute.MirroredStrategy(two_devices), verbose=0)
        result = {"table": hasher.model.table.numpy().tolist(), "expected": expected_table(x, y).tolist(),
                  "replicas": hasher.model.distribute_strategy.num_replicas_in_sync}
    elif mode == "replica_noise":
        strategy = tf.distribute.MirroredStrategy(two_devices)
        scheme_cls = tfhash.schemes.get(name)
        with strategy.scope():
            model = scheme_cls(bits=8, input_shape=inputs.input_shape(scheme_cls), seed=0,
                               **inputs.hyperparameters(scheme_cls))

        @tf.function
        def draw():
            return strategy.run(lambda: tfhash.distribution.batch_random(stateless.normal, [4, 100],
                                                           model._stateless_seed(tf.constant(0, tf.int64), 1)))

        per_replica = strategy.experimental_local_results(draw())
        result = {"replica_noise": [np.asarray(v).tolist() for v in per_replica],
                  "one_device": np.asarray(stateless.normal(
                      [8, 100], model._stateless_seed(tf.constant(0, tf.int64), 1))).tolist()}
    else:  # one worker of a MultiWorkerMirroredStrategy cluster described by TF_CONFIG
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        x = data(tfhash.schemes.get(name))
        hasher = tfhash.fit(name, x, bits=8, epochs=1, batch_size=16, strategy=strategy, verbose=0)
        result = {"history": {k: [float(v) for v in vals] for k, vals in hasher.history.history.items()},
                  "probabilities": hasher.predict_probabilities(x).tolist(),
                  "replicas": strategy.num_replicas_in_sync}
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
