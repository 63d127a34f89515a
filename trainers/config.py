"""Run configuration for the trainer: the scheme's presets, ``--set key=value`` overrides, distribution strategies.

Everything here validates before any data is loaded or any model is built, and raises ``ValueError``
with a message that says what to do.
"""

import json
import os

import tensorflow as tf

from tfhash import _validation, baselines, datasets, schemes, training
from tfhash.schemes import presets as presets_lib

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
# Command-line spelling of ``tfhash.fit``'s ``jit_compile`` (Keras's "auto" / True / False).
JIT_COMPILE = {"auto": "auto", "true": True, "false": False}
DEFAULT_EVAL_EVERY = 10


def check_scheme(name):
    if name not in schemes.names():
        hint = (" It is a shallow baseline: every run already compares against the baselines listed in "
                "--baselines.") if name in baselines.BASELINES else ""
        raise ValueError(f"--scheme must be one of {schemes.names()}, got {name!r}.{hint}")
    return schemes.get(name)


def check_dataset(name):
    if name in datasets.known_datasets() or os.path.exists(name):
        return name
    raise ValueError(f"--dataset must be one of {datasets.known_datasets()} or a path to local files (a directory "
                     f"of MNIST IDX files or CIFAR-10 python batches, or an .npz with images and labels), "
                     f"got {name!r}.")


def parse_set_flags(items, scheme_cls):
    """``["key=value", ...]`` -> dict; values are JSON (numbers, true/false, quoted strings) or plain strings."""
    values = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set must be key=value, got {item!r}.")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return scheme_cls.check_values(values, origin="--set", names_only=True)


def resolve(scheme, dataset, *, preset=None, epochs=None, batch_size=None, eval_every=None, learning_rate=None,
            overrides=(), bits=32):
    """Checks the flags and merges them over the preset; returns the run configuration (a dict).

    ``hyperparameters`` holds the explicit overrides only (``--learning_rate``, ``--set``): the trainer passes
    them with ``preset`` to ``tfhash.fit``, which applies the preset exactly as it does for any caller.
    """
    scheme_cls = check_scheme(scheme)
    check_dataset(dataset)
    hyperparameters = {}
    if learning_rate is not None:
        if "learning_rate" not in scheme_cls.default_hyperparameters():
            raise ValueError(f"--learning_rate: scheme {scheme!r} has no `learning_rate` hyperparameter; use --set.")
        if not learning_rate > 0:
            raise ValueError(f"--learning_rate must be > 0, got {learning_rate}.")
        hyperparameters["learning_rate"] = float(learning_rate)
    hyperparameters.update(parse_set_flags(overrides, scheme_cls))
    try:
        preset = presets_lib.resolve(scheme_cls, preset)
    except ValueError as err:
        raise ValueError(f"--preset: {err}") from None
    # The plan tfhash.fit makes, checked before any data is loaded.
    run = training.plan(scheme_cls, bits=bits, preset=preset, epochs=epochs, batch_size=batch_size,
                        hyperparameters=hyperparameters, origin="--set",
                        argument_names={"epochs": "--epochs", "batch_size": "--batch_size"})
    config = dict(
        scheme=scheme, dataset=dataset, bits=run.bits, preset=run.preset, hyperparameters=hyperparameters,
        epochs=run.epochs, batch_size=run.batch_size,
        eval_every=int(eval_every if eval_every is not None else DEFAULT_EVAL_EVERY),
        # Without --epochs tfhash.fit takes the preset's, scaled for the training set's size as the preset says.
        epochs_given=epochs is not None,
    )
    size = datasets.KNOWN_SIZES.get(dataset)
    if size is not None and config["batch_size"] > size:
        raise ValueError(f"--batch_size {config['batch_size']} is larger than the {size} items of {dataset!r}.")
    if config["eval_every"] < 0:
        raise ValueError(f"--eval_every must be >= 0 (0 = only the final evaluation), got {config['eval_every']}.")
    return config


def make_strategy(name, tpu=""):
    """A ``tf.distribute`` strategy by name. ``multi_worker`` reads ``TF_CONFIG``; ``tpu`` uses ``tpu`` (a name
    or grpc address; empty = the TPU attached to this VM / Colab runtime)."""
    _validation.check_choice(name, "--strategy", STRATEGIES)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable (cluster and this "
                             "worker's task); see https://www.tensorflow.org/guide/distributed_training.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        raise ValueError(f"--strategy=tpu: no TPU found ({err}). Pass --tpu=<name or grpc://address> or run on a "
                         "TPU runtime.") from err
    return tf.distribute.TPUStrategy(resolver)


def worker_role(strategy):
    """``(is_chief, task_id)``: only the chief (the worker the strategy checkpoints on) writes metrics,
    summaries and exports."""
    task_id = getattr(getattr(strategy, "cluster_resolver", None), "task_id", None) or 0
    return bool(strategy.extended.should_checkpoint), task_id
