"""Runs on disk: the checkpoint directory's config file, the checkpoint manager, restore and the resume rules.

A run directory holds ``tfhash_config.json`` (scheme, config, preset, schedule) and the last
``KEPT_CHECKPOINTS`` checkpoints of model, optimizers and epoch counter. ``tfhash.fit(checkpoint_dir=...)``
resumes from it, ``Hasher.save`` / ``Hasher.load`` write and read it.
"""

from __future__ import annotations

import os
import warnings

import keras
import tensorflow as tf

from tfhash import _io, _validation, schemes
from tfhash import export as export_lib
from tfhash.schemes import backbones

CONFIG_FILE = "tfhash_config.json"
CHECKPOINT_PREFIX = "ckpt"
KEPT_CHECKPOINTS = 2


def check_run_directory(directory: str | os.PathLike, name: str) -> str:
    """``directory`` as a string, after refusing what a training run must not be written into: an empty
    path, a file, and an export (its checkpoints would be deleted when the export is replaced)."""
    if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory).strip():
        raise ValueError(f"`{name}` must name a directory for the run's checkpoints, got {directory!r}.")
    directory = os.fspath(directory)
    if os.path.isfile(directory):
        raise ValueError(f"`{name}` must be a directory, got an existing file {directory!r}.")
    if export_lib.is_export(directory) or os.path.isfile(os.path.join(directory, "saved_model.pb")):
        raise ValueError(f"`{name}` {directory!r} holds a SavedModel export; a training run must have a directory of "
                         "its own (checkpoints written into an export would be lost when it is replaced).")
    return directory


def checkpoint_manager(model: keras.Model, epoch: tf.Variable | int,
                       directory: str | os.PathLike) -> tf.train.CheckpointManager:
    """Keeps the last ``KEPT_CHECKPOINTS`` checkpoints of model, optimizers and epoch counter in ``directory``."""
    checkpoint = tf.train.Checkpoint(model=model, epoch=epoch,
                                     **{f"optimizer_{name}": opt for name, opt in model.scheme_optimizers.items()})
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=KEPT_CHECKPOINTS,
                                      checkpoint_name=CHECKPOINT_PREFIX)


def read_description(directory: str | os.PathLike) -> dict:
    """The config file of a checkpoint directory, as a dict; a broken or edited file is named with its field."""
    config_path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise ValueError(f"`directory` must hold a tfhash checkpoint ({CONFIG_FILE} missing): {directory!r}.")
    description = _io.read_json_file(config_path, "it records the scheme and settings of the checkpoints beside it")
    _check_description(description, config_path)
    return description


def _check_description(description, config_path):
    def broken(field, expected, got):
        raise ValueError(f"{config_path}: field {field!r} must be {expected}, got {got!r}.")

    if not isinstance(description, dict):
        broken("(top level)", "an object", type(description).__name__)
    if description.get("scheme") not in schemes.names():
        broken("scheme", f"one of the registered schemes {schemes.names()}", description.get("scheme"))
    config = description.get("config")
    if not isinstance(config, dict):
        broken("config", "an object of the scheme's settings", config)
    bits = config.get("bits")
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < 1:
        broken("config.bits", "a positive integer", bits)
    shape = config.get("input_shape")
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        broken("config.input_shape", "a list of positive integers", shape)
    scheme_cls = schemes.get(description["scheme"])
    unknown = sorted(set(config) - {"bits", "input_shape", "seed"} - set(scheme_cls.default_hyperparameters()))
    if unknown:
        broken("config", f"settings of {scheme_cls.key!r} only (unknown: {unknown})", sorted(config))


def _checkpoint_paths(directory):
    """Checkpoint prefixes in ``directory``, newest first."""
    state = tf.train.get_checkpoint_state(directory)
    # TensorFlow has already joined ``directory`` to relative entries: joining again broke relative directories.
    return list(reversed(state.all_model_checkpoint_paths)) if state else []


def restore(directory: str | os.PathLike, description: dict, strategy: tf.distribute.Strategy | None = None,
            total_steps: int | str | None = "saved", hyperparameters: dict | None = None,
            jit_compile: str | bool = "auto", steps_per_execution: int = 1) -> tuple:
    """``(model, epoch)`` rebuilt from ``description`` and the newest readable checkpoint in ``directory``.

    ``hyperparameters`` holds values of the resuming call that the config can only describe (arrays, models).
    A truncated or corrupt newest checkpoint falls back to the previous one (two are kept), with a
    warning naming the file; a checkpoint that does not match the config (an edited config file) is
    refused naming both.
    """
    with (strategy or tf.distribute.get_strategy()).scope():
        try:
            # Settings the config can only describe (recorded as something else, e.g. an array's fingerprint)
            # come from the caller.
            scheme_cls = schemes.get(description["scheme"])
            described = {k: v for k, v in (hyperparameters or {}).items()
                         if isinstance(schemes.settings.recorded(scheme_cls, k, v), str) and not isinstance(v, str)}
            with backbones.restoring():  # the checkpoint brings every weight: nothing to download
                model = scheme_cls.from_config({**description["config"], **described})
        except ValueError as err:
            raise ValueError(f"{os.path.join(directory, CONFIG_FILE)}: field 'config' holds settings the "
                             f"{description['scheme']!r} scheme refuses: {err}") from err
        model.compile(total_steps=description.get("total_steps") if total_steps == "saved" else total_steps,
                      jit_compile=jit_compile, steps_per_execution=steps_per_execution)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoint = checkpoint_manager(model, epoch, directory).checkpoint
    paths = _checkpoint_paths(directory)
    if not paths:
        raise ValueError(f"`directory` holds no checkpoint files: {directory!r}.")
    failures = []
    for path in paths:
        try:
            checkpoint.restore(path).assert_existing_objects_matched().expect_partial()
        except Exception as err:  # noqa: BLE001 - readers raise OpError, IndexError, ValueError, AssertionError...
            failures.append((path, err))
            continue
        if failures:
            reason = _validation.error_summary(failures[0][1])
            warnings.warn(f"checkpoint {failures[0][0]} is unreadable ({reason}); restored the "
                          f"previous checkpoint {path} (epoch {int(epoch.numpy())}) instead.", stacklevel=2)
        return model, int(epoch.numpy())
    details = "; ".join(f"{path}: {_validation.error_summary(err)}" for path, err in failures)
    raise ValueError(f"no checkpoint in {directory!r} could be restored into the model its {CONFIG_FILE} describes "
                     f"(scheme {description['scheme']!r}, bits={description['config']['bits']}, input_shape="
                     f"{description['config']['input_shape']}): the files are corrupt or the config was edited. "
                     f"{details}")


def save(model: keras.Model, epoch: tf.Variable | int, description: dict, directory: str | os.PathLike) -> str:
    """Writes ``description`` (the config file) and a checkpoint of ``model`` at ``epoch`` to ``directory``."""
    directory = check_run_directory(directory, "directory")
    _check_not_another_run(model, directory)
    os.makedirs(directory, exist_ok=True)
    checkpoint_manager(model, tf.Variable(epoch, dtype=tf.int64, trainable=False), directory).save()
    _io.write_json_atomically(os.path.join(directory, CONFIG_FILE), description)
    return directory


def _check_not_another_run(model, directory):
    """Saving replaces the config and prunes old checkpoints: refuse a directory of another model."""
    if os.path.isfile(os.path.join(directory, CONFIG_FILE)):
        saved = read_description(directory)
        if saved.get("scheme") != model.key or saved.get("config") != model.get_config():
            raise ValueError(f"`directory` {directory!r} holds the checkpoints of another model "
                             f"({saved.get('scheme')!r}, bits={saved.get('config', {}).get('bits')}); saving here "
                             "would replace its config and delete its checkpoints. Choose another directory.")
    elif os.path.isdir(directory) and tf.train.latest_checkpoint(directory):
        raise ValueError(f"`directory` {directory!r} holds checkpoints without a {CONFIG_FILE}; saving here "
                         "would delete them. Choose another directory.")


def _same_setting(saved, asked):
    if isinstance(saved, float) and isinstance(asked, (int, float)) and not isinstance(asked, bool):
        return saved == float(asked)
    if isinstance(asked, tuple):
        asked = list(asked)
    return saved == asked


def differing_settings(scheme_cls: type, saved: dict, asked: dict) -> dict:
    """``{name: (saved value, asked value)}`` for each hyperparameter of ``asked`` that ``saved`` (a model's
    ``get_config``, as a checkpoint or a benchmark record keeps it) holds another value of. A name ``saved`` lacks
    (a hyperparameter added to the scheme since) counts as its constructor default, the behaviour it was made with."""
    defaults = scheme_cls.default_hyperparameters()
    differing = {}
    for name, value in asked.items():
        value = schemes.settings.recorded(scheme_cls, name, value)
        before = saved.get(name, defaults.get(name))
        if not _same_setting(before, value):
            differing[name] = (before, value)
    return differing


def check_resumable(description: dict, checkpoint_dir: str | os.PathLike, scheme_cls: type, bits: int,
                    item_shape: tuple, hyperparameters: dict, training: dict) -> None:
    """Raises ``ValueError`` when a checkpoint was trained with other settings than this call asks for."""
    config = description["config"]
    if (description["scheme"] != scheme_cls.key or config["bits"] != bits
            or tuple(config["input_shape"]) != tuple(item_shape)):
        raise ValueError(f"`checkpoint_dir` {checkpoint_dir!r} holds a {description['scheme']!r} model with bits="
                         f"{config['bits']} and input shape {tuple(config['input_shape'])}; this call asks for "
                         f"{scheme_cls.key!r}, bits={bits}, input shape {item_shape}. Use another directory.")
    differing = differing_settings(scheme_cls, config, {**scheme_cls.default_hyperparameters(), **hyperparameters})
    saved_training = description.get("training") or {}
    for key in ("seed", "batch_size"):  # another seed or batch size would not continue the same run
        if key in saved_training and saved_training[key] != training[key]:
            differing[key] = (saved_training[key], training[key])
    if differing:
        details = ", ".join(f"{k}: saved {a!r}, asked {b!r}" for k, (a, b) in sorted(differing.items()))
        raise ValueError(f"`checkpoint_dir` {checkpoint_dir!r} was trained with other settings ({details}); "
                         "resume with the saved ones or use another directory.")


def resumes(checkpoint_dir: str | os.PathLike | None) -> bool:
    """Whether ``checkpoint_dir`` holds a run to resume; refuses checkpoints without a config file (training
    from scratch would overwrite them)."""
    if checkpoint_dir is None:
        return False
    if os.path.isfile(os.path.join(checkpoint_dir, CONFIG_FILE)):
        return True
    if os.path.isdir(checkpoint_dir) and tf.train.latest_checkpoint(checkpoint_dir):
        raise ValueError(f"`checkpoint_dir` {checkpoint_dir!r} holds checkpoints but no {CONFIG_FILE}: it cannot "
                         "be resumed, and training from scratch would overwrite them. Use another directory.")
    return False


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves model + optimizers at each epoch end, unless a loss went non-finite in that epoch."""

    def __init__(self, manager, epoch_variable, guard):
        super().__init__()
        self.manager, self.epoch_variable, self.guard = manager, epoch_variable, guard

    def on_epoch_end(self, epoch: tf.Variable | int, logs: dict | None = None) -> None:
        if self.guard.message is None:
            self.epoch_variable.assign(epoch + 1)
            self.manager.save(checkpoint_number=epoch + 1)
