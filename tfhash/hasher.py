"""A trained scheme as users hold it: :class:`Hasher` encodes, evaluates against the shallow baselines, builds a
search index, saves / loads checkpoints that resume training and exports the encoder.

:class:`BaseHasher` is what every hasher offers on top of ``encode`` (the exported ones in
``tfhash.serving`` too).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from tfhash import _io, _validation, datasets, evaluation, schemes
from tfhash import export as export_lib
from tfhash import index as index_lib

CONFIG_FILE = "tfhash_config.json"
CHECKPOINT_PREFIX = "ckpt"
KEPT_CHECKPOINTS = 2


class BaseHasher:
    """What every hasher offers on top of ``encode``: evaluation and a search index.

    Subclasses provide ``bits``, ``scheme`` and ``encode(x)``.
    """

    def evaluate(self, split: datasets.RetrievalSplit, *,
                 baselines: Sequence[str] = ("lsh", "pcah", "itq", "sph", "sh"),
                 top_k: int = 1000, radius: int = 2, seed: int = 0, pr_curve: bool = False,
                 log: Callable[[str], None] | None = print) -> list[dict]:
        """Retrieval figures of this hasher and of the shallow baselines on ``split`` (a RetrievalSplit).

        Returns a list of rows (dicts): this scheme first, then each baseline fitted on ``split.train_x``.
        With ``pr_curve``, each row also holds its precision-recall curve over Hamming radii.
        """
        if not isinstance(split, datasets.RetrievalSplit):
            raise ValueError(f"`split` must be a tfhash.datasets.RetrievalSplit, got {type(split).__name__}.")
        row = {"method": self.scheme, "bits": self.bits}
        row.update(evaluation.evaluate_codes(self.encode(split.query_x), self.encode(split.database_x),
                                             split.query_y, split.database_y, bits=self.bits, top_k=top_k,
                                             radius=radius, pr_curve=pr_curve))
        rows = [row]
        if baselines:
            rows += evaluation.compare_baselines(split, self.bits, names=baselines, seed=seed, top_k=top_k,
                                                 radius=radius, pr_curve=pr_curve, log=log)
        return rows

    def index(self, database_x: ArrayLike, ids: ArrayLike | None = None, backend: str = "numpy",
              **options) -> index_lib.HammingIndex | index_lib.FaissIndex:
        """A search index (``tfhash.index``) over the codes of ``database_x``."""
        return index_lib.make_index(self.bits, backend, **options).add(self.encode(database_x), ids=ids)


class Hasher(BaseHasher):
    """A trained scheme: ``encode``, ``evaluate``, ``index``, ``save`` / ``load``, ``export``.

    Attributes:
        model: the underlying :class:`~tfhash.schemes.base.HashingScheme` (a ``keras.Model``).
        history: the ``keras.callbacks.History`` of the last fit (``None`` after ``load``).
        epoch: epochs trained.
        preset: name of the preset it was trained with (``None`` if unknown).
        training: the schedule it was trained with (``epochs``, ``batch_size``, ``seed``), or ``{}``.
    """

    def __init__(self, model, history=None, epoch=0, preset=None, training=None):
        self.model = model
        self.history = history
        self.epoch = epoch
        self.preset = preset
        self.training = dict(training or {})

    @property
    def bits(self):
        return self.model.bits

    @property
    def scheme(self):
        return self.model.key

    @property
    def fingerprint(self):
        """A digest of the encoder's weights, threshold and bits (``tfhash.export.encoder_fingerprint``): its
        exports carry the same one, and saved indexes record it."""
        return export_lib.encoder_fingerprint(self.model)

    def __repr__(self):
        return (f"Hasher(scheme={self.scheme!r}, bits={self.bits}, input_shape={self.model.item_shape}, "
                f"epoch={self.epoch}, preset={self.preset!r})")

    def encode(self, x: ArrayLike, batch_size: int = 256) -> np.ndarray:
        """Packed uint8 codes ``[n, ceil(bits / 8)]`` (the same graph the export saves)."""
        return self.model.encode(x, batch_size=batch_size)

    def predict_probabilities(self, x: ArrayLike, batch_size: int = 256) -> np.ndarray:
        """Continuous codes ``[n, bits]`` (float32), before the threshold."""
        return self.model.predict_probabilities(x, batch_size=batch_size)

    @property
    def trained(self):
        """True once any optimizer has taken a step."""
        return any(int(o.iterations.numpy()) > 0 for o in self.model.scheme_optimizers.values())

    def export(self, path: str | os.PathLike, *, overwrite: bool = False) -> str:
        """Writes a SavedModel of the encoder only (see :func:`tfhash.export.export_saved_model`)."""
        return export_lib.export_saved_model(self, path, overwrite=overwrite)

    def description(self):
        """What the checkpoint directory's config file records: scheme, config, preset, schedule."""
        return {"scheme": self.model.key, "config": self.model.get_config(), "total_steps": self.model.total_steps,
                "preset": self.preset, "training": self.training}

    def save(self, directory: str | os.PathLike) -> str:
        """Writes the scheme's config and a checkpoint (model + optimizers) to ``directory``."""
        directory = check_run_directory(directory, "directory")
        self._check_not_another_run(directory)
        os.makedirs(directory, exist_ok=True)
        epoch = tf.Variable(self.epoch, dtype=tf.int64, trainable=False)
        checkpoint_manager(self.model, epoch, directory).save()
        _io.write_json_atomically(os.path.join(directory, CONFIG_FILE), self.description())
        return directory

    def _check_not_another_run(self, directory):
        """Saving replaces the config and prunes old checkpoints: refuse a directory of another model."""
        if os.path.isfile(os.path.join(directory, CONFIG_FILE)):
            saved = read_description(directory)
            if saved.get("scheme") != self.model.key or saved.get("config") != self.model.get_config():
                raise ValueError(f"`directory` {directory!r} holds the checkpoints of another model "
                                 f"({saved.get('scheme')!r}, bits={saved.get('config', {}).get('bits')}); saving here "
                                 "would replace its config and delete its checkpoints. Choose another directory.")
        elif os.path.isdir(directory) and tf.train.latest_checkpoint(directory):
            raise ValueError(f"`directory` {directory!r} holds checkpoints without a {CONFIG_FILE}; saving here "
                             "would delete them. Choose another directory.")

    @classmethod
    def load(cls, directory: str | os.PathLike, hyperparameters: dict | None = None) -> Hasher:
        """Rebuilds a hasher from a directory written by :meth:`save` or ``fit(checkpoint_dir=...)``.

        ``hyperparameters``: settings the config records only as a description (an array, a ``keras.Model``
        such as a user backbone), as they were given to ``tfhash.fit``.
        """
        description = read_description(directory)
        model, epoch = restore(directory, description, hyperparameters=hyperparameters)
        return cls(model, epoch=epoch, preset=description.get("preset"), training=description.get("training"))


def check_run_directory(directory, name):
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


def checkpoint_manager(model, epoch, directory):
    """Keeps the last ``KEPT_CHECKPOINTS`` checkpoints of model, optimizers and epoch counter in ``directory``."""
    checkpoint = tf.train.Checkpoint(model=model, epoch=epoch,
                                     **{f"optimizer_{name}": opt for name, opt in model.scheme_optimizers.items()})
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=KEPT_CHECKPOINTS,
                                      checkpoint_name=CHECKPOINT_PREFIX)


def read_description(directory):
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


def restore(directory, description, strategy=None, total_steps="saved", hyperparameters=None, jit_compile="auto",
            steps_per_execution=1):
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
