"""``tfhash.fit``: train any registered scheme on arrays, a ``tf.data.Dataset`` or a retrieval split.

Batches carry what the scheme asks for: always the items (``"x"``), its labels (``"y"``) when the scheme
``needs_labels``, and each item's position in the training set (``"index"``) when it ``needs_indices``.
The returned :class:`~tfhash.hasher.Hasher` encodes, evaluates, indexes, saves and exports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike
from tensorflow.core.framework import graph_pb2

from tfhash import _io, _validation, checkpoints, datasets, schemes, sources
from tfhash import codes as codes_lib
from tfhash.encoding import (
    IMAGE_RANGE_TOLERANCE,
    PIXEL_HINT,
    PIXEL_SCALE,
    check_image_range,
    check_items,
    check_training_dtype,
)
from tfhash.hasher import Hasher
from tfhash.schemes import backbones
from tfhash.schemes import presets as presets_lib

DATASET_KEYS = {"x": ("x", "image", "images"), "y": ("y", "label", "labels"), "index": ("index",)}
# Markers around the message of a batch outside the image range, built inside the pipeline.
IMAGE_RANGE_START, IMAGE_RANGE_END = "<<tfhash ", " tfhash>>"


class _NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops training at the end of the first epoch whose logged losses are NaN or inf, naming them.

    Checked once per epoch: a batch-level hook would make Keras copy every step's logs to the host, a sync
    that stalls a GPU's pipeline. The epoch's logs are means over its batches, so one non-finite batch shows.
    """

    def __init__(self):
        super().__init__()
        self.message = None

    def on_epoch_end(self, epoch, logs=None):
        bad = sorted(k for k, v in (logs or {}).items() if not np.all(np.isfinite(np.asarray(v, dtype=float))))
        if bad and self.message is None:
            self.message = f"loss term(s) {bad} became non-finite in epoch {epoch + 1}"
            self.model.stop_training = True


@dataclasses.dataclass
class _TrainingData:
    """Items, labels and indices as the scheme asks for them: arrays (``x``, ``y``) or a dataset of dicts."""

    item_shape: tuple
    x: np.ndarray = None
    y: np.ndarray = None
    dataset: tf.data.Dataset = None
    features: np.ndarray = None  # a frozen backbone's outputs for every item, computed once (``features_once``)

    @property
    def count(self):
        arrays = [part for part in (self.x, self.features) if part is not None]
        return arrays[0].shape[0] if arrays else None


def _dataset_parts(spec):
    """Which element positions / keys of a dataset hold x, y and index: ``{part: key or position}``."""
    if isinstance(spec, dict):
        parts = {}
        for part, names in DATASET_KEYS.items():
            found = [name for name in names if name in spec]
            if found:
                parts[part] = found[0]
        if "x" not in parts:
            raise ValueError(f"`x` dataset of dicts must have an item key (one of {list(DATASET_KEYS['x'])}), "
                             f"got keys {sorted(spec)}.")
        return parts
    if isinstance(spec, (tuple, list)):
        if not 1 <= len(spec) <= 2:
            raise ValueError(f"`x` dataset must yield items, (items, labels) or dicts, got tuples of {len(spec)}.")
        return {"x": 0, "y": 1} if len(spec) == 2 else {"x": 0}
    return {"x": None}


def _endless(dataset):
    """True when the dataset never ends: an infinite ``.repeat()`` upstream that no ``.take()`` cuts short.

    Catches what ``cardinality()`` reports as unknown (``.repeat().filter(...)``); a Python generator that
    never returns cannot be told from a long one, so it is not caught here.
    """
    # tf.data has no public view of a pipeline's stages (cardinality() says UNKNOWN after a filter), so this reads
    # its serialised graph through the private _as_serialized_graph; when that breaks, the dataset counts as
    # finite and test_datasets_of_unknown_size_train_one_pass_per_epoch_and_endless_ones_need_a_length fails.
    try:
        graph = graph_pb2.GraphDef.FromString(dataset._as_serialized_graph().numpy())
    except Exception:  # noqa: BLE001 - a dataset that cannot be serialised is taken as finite
        return False
    nodes = {node.name: node for node in graph.node}

    def count(name):
        node = nodes.get(name.split(":")[0])
        return int(tf.make_ndarray(node.attr["value"].tensor)) if node is not None and node.op == "Const" else None

    def endless(name):
        node = nodes[name.split(":")[0]]
        stages = [i for i in node.input if not i.startswith("^") and "Dataset" in nodes[i.split(":")[0]].op]
        if node.op == "RepeatDataset" and (count(node.input[1]) or 0) < 0:
            return True
        if node.op == "TakeDataset" and (count(node.input[1]) or -1) >= 0:
            return False
        if node.op == "ZipDataset":
            return all(endless(i) for i in stages)
        return any(endless(i) for i in stages)

    outputs = [node.input[0] for node in graph.node if node.op == "_Retval"]
    return bool(outputs) and endless(outputs[0])


def _range_checked(x):
    """``x``, asserting inside the pipeline that its values lie in the image range [0, 1]."""
    low, high = tf.reduce_min(x), tf.reduce_max(x)
    in_range = tf.logical_and(low >= -IMAGE_RANGE_TOLERANCE, high <= 1.0 + IMAGE_RANGE_TOLERANCE)
    low_text, high_text = tf.strings.as_string(low, shortest=True), tf.strings.as_string(high, shortest=True)
    message = tf.strings.join([IMAGE_RANGE_START, "`x` must hold images with values in [0, 1], got values in [",
                               low_text, ", ", high_text, "].", tf.where(high > 1.5, PIXEL_HINT, ""), IMAGE_RANGE_END])
    with tf.control_dependencies([tf.debugging.Assert(in_range, [message])]):
        return tf.identity(x)


def _normalise_dataset(dataset, scheme_cls, steps_per_epoch):
    """A dataset of dicts holding ``"x"`` (float32, images scaled) and the labels / indices the scheme asks
    for and the dataset has; also returns the item shape and which parts it has."""
    spec = dataset.element_spec
    parts = _dataset_parts(spec)
    x_spec = spec if parts["x"] is None else spec[parts["x"]]
    if not isinstance(x_spec, tf.TensorSpec) or x_spec.shape.rank is None or x_spec.shape.rank < 2 \
            or None in x_spec.shape[1:]:
        raise ValueError(f"`x` dataset must yield batches [batch, ...] of a fixed item shape (call "
                         f".batch(batch_size) on a dataset of single items), got element spec {spec}.")
    if scheme_cls.input_kind == "images" and x_spec.shape.rank == 3 and x_spec.shape[-1] in (1, 3, 4):
        # [batch, height, width] batches never end in a 1/3/4-wide axis; single [h, w, c] images do.
        raise ValueError(f"`x` dataset yields single images of shape {tuple(x_spec.shape)} (height, width, "
                         "channels), not batches of them: call .batch(batch_size) on it.")
    cardinality = int(dataset.cardinality())
    infinite = cardinality == tf.data.INFINITE_CARDINALITY or (
        cardinality == tf.data.UNKNOWN_CARDINALITY and _endless(dataset))
    if infinite and steps_per_epoch is None:
        raise ValueError("`x` dataset is infinite (.repeat() without a count): an epoch would never end and no "
                         "checkpoint would be written. Pass a finite dataset (`epochs` sets the passes over it) "
                         "or `steps_per_epoch`.")
    if cardinality == 0:
        raise ValueError("`x` dataset is empty: it yields no batches.")
    dtype = x_spec.dtype.as_numpy_dtype
    check_training_dtype(np.dtype(dtype), scheme_cls.input_kind)
    scale = scheme_cls.input_kind == "images" and x_spec.dtype == tf.uint8
    if scheme_cls.input_kind == "images" and x_spec.dtype.is_integer and not scale:
        raise ValueError("`x` dataset must yield float images in [0, 1] or uint8 pixels, "
                         f"got dtype {x_spec.dtype.name}.")
    wanted = ["x"] + [part for part, needed in (("y", scheme_cls.needs_labels), ("index", scheme_cls.needs_indices))
                      if needed and part in parts]

    check_range = scheme_cls.input_kind == "images" and not scale

    def to_dict(*element):
        element = element[0] if len(element) == 1 else element
        batch = {}
        for part in wanted:
            key = parts[part]
            batch[part] = element if key is None else element[key]
        x = tf.cast(batch["x"], tf.float32)
        if check_range:  # every batch, not only the first: a later one may hold 0-255 values
            x = _range_checked(x)
        batch["x"] = x / PIXEL_SCALE if scale else x
        if "index" in batch:
            batch["index"] = tf.cast(batch["index"], tf.int64)
        return batch

    normalised = dataset.map(to_dict, num_parallel_calls=tf.data.AUTOTUNE)
    # The first batch shows an empty dataset of unknown size, and 0-255 floats, before any training
    # (the dataset is not read whole here).
    first = next(iter(normalised.take(1)), None)
    if first is None:
        raise ValueError("`x` dataset is empty: it yields no batches.")
    if scheme_cls.input_kind == "images":
        check_image_range(float(tf.reduce_min(first["x"])), float(tf.reduce_max(first["x"])), "x")
    return normalised, tuple(x_spec.shape[1:]), set(parts)


@contextlib.contextmanager
def _image_range_errors():
    """Raises the input pipeline's range assertion as the ``ValueError`` the first batch would have given.

    tf.data has no public way to raise a Python error from inside a pipeline: the assertion carries the whole
    message, between the markers ``IMAGE_RANGE_START`` and ``IMAGE_RANGE_END``, and this finds it there (tested by
    ``test_every_batch_of_a_dataset_is_range_checked``).
    """
    try:
        yield
    except tf.errors.InvalidArgumentError as err:
        start, _, rest = str(err).partition(IMAGE_RANGE_START)
        if not rest or IMAGE_RANGE_END not in rest:
            raise
        raise ValueError(rest.split(IMAGE_RANGE_END, 1)[0]) from None


def _prepare_data(x, y, scheme_cls, steps_per_epoch=None, run=None):
    """Checks the training data and returns a :class:`_TrainingData` with what the scheme asks for."""
    if isinstance(x, (str, os.PathLike)):
        x = _image_folder(x, y, scheme_cls, run)
    if isinstance(x, datasets.RetrievalSplit):
        y = x.train_y if y is None else y
        x = x.train_x
    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise ValueError(f"`y` must be None when `x` is a tf.data.Dataset (labels come with its elements: "
                             f"(x, y) tuples or dicts), got {type(y).__name__}.")
        dataset, item_shape, has = _normalise_dataset(x, scheme_cls, steps_per_epoch)
        if scheme_cls.needs_labels and "y" not in has:
            raise ValueError(f"scheme {scheme_cls.key!r} trains on labels: the `x` dataset must yield (x, y) tuples or "
                             "dicts with a 'y' key (-1 or all-zero rows for unlabelled items).")
        if not scheme_cls.needs_indices or "index" in has:
            return _TrainingData(item_shape=item_shape, dataset=dataset)
        if steps_per_epoch is not None:
            raise ValueError(f"scheme {scheme_cls.key!r} needs each item's position in the training set: its `x` "
                             "dataset is read once into memory, so it must be finite and `steps_per_epoch` must be "
                             "None.")
        # Positions in the training set need one fixed order: read the dataset once into arrays.
        batches = list(dataset.as_numpy_iterator())
        if not batches:
            raise ValueError("`x` dataset is empty.")
        x = np.concatenate([b["x"] for b in batches])
        y = np.concatenate([b["y"] for b in batches]) if "y" in batches[0] else None
    if steps_per_epoch is not None and not isinstance(x, tf.data.Dataset):
        raise ValueError("`steps_per_epoch` applies to a tf.data.Dataset `x` only (arrays train on every item once "
                         f"per epoch), got {steps_per_epoch!r} with {type(x).__name__} items.")
    if not isinstance(x, np.ndarray) and not hasattr(x, "__array__"):
        raise ValueError(f"`x` must be an array, a tf.data.Dataset or a RetrievalSplit, got {type(x).__name__}.")
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"`x` must be [n, ...] items, got shape {x.shape}.")
    check_training_dtype(x.dtype, scheme_cls.input_kind)
    x = check_items(x, None, "x", input_kind=scheme_cls.input_kind)
    labels = _validation.check_training_labels(y, "y", x.shape[0], "x") if scheme_cls.needs_labels else None
    return _TrainingData(item_shape=tuple(x.shape[1:]), x=x, y=labels)


def _image_folder(directory, y, scheme_cls, run):
    """The batches of a folder of images (:func:`tfhash.sources.image_folder`), labelled by their sub-folders for
    a scheme that trains on labels, in the run's batch size and seed."""
    if not os.path.isdir(directory):
        raise ValueError(f"`x` as a path must be a folder of images, got {os.fspath(directory)!r}, which is not one.")
    if y is not None:
        raise ValueError("`y` must be None when `x` is a folder of images: their labels are its sub-folders.")
    batch_size = run.batch_size if run else 32
    dataset = sources.image_folder(directory, labels="inferred" if scheme_cls.needs_labels else None,
                                   batch_size=batch_size, seed=run.seed if run else 0, drop_remainder=True)
    if len(dataset.file_paths) < batch_size:
        raise ValueError(f"`x` folder {os.fspath(directory)!r} must hold at least one batch ({batch_size} images "
                         "it can decode), got fewer: pass a smaller batch_size or add images.")
    return dataset


def _training_labels(data):
    """The checked labels of the training data (read from the dataset when it holds them)."""
    if data.x is not None:
        return data.y
    labels = [np.asarray(b) for b in data.dataset.map(lambda b: b["y"]).as_numpy_iterator()]
    labels = np.concatenate(labels) if labels else np.empty((0,), np.int64)
    return _validation.check_training_labels(labels, "y", labels.shape[0], "x")


def _epoch_batches(data, scheme_cls, batch_size, seed, first_epoch, epochs):
    """Batches (dicts) for epochs ``first_epoch..epochs-1``; epoch e's order depends only on (seed, e).

    So a run resumed at epoch e sees exactly the batches an uninterrupted run would have seen.
    """
    tensors = {key: tf.convert_to_tensor(value) for key, value in
               (("x", data.x), ("y", data.y), ("features", data.features)) if value is not None}
    with_index = scheme_cls.needs_indices

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(data.count, dtype=tf.int64),
                                                         seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=True)

    def gather(index):
        batch = {key: tf.gather(value, index) for key, value in tensors.items()}
        if with_index:
            batch["index"] = index
        return batch

    return (tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch)
            .map(gather, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


@dataclasses.dataclass
class Plan:
    """What a run will do, settled before any data is read: the scheme, its preset, schedule and hyperparameters
    (the preset's, overridden by the caller's). ``tfhash.fit`` and the trainer both make one with :func:`plan`."""

    scheme_cls: type
    preset: presets_lib.Preset
    bits: int
    epochs: int
    batch_size: int
    seed: int
    hyperparameters: dict
    epochs_from_preset: bool

    @property
    def training(self) -> dict:
        """The schedule a checkpoint records (another one would not continue the same run)."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "seed": self.seed}


def plan(scheme: str | type, *, bits: int = 32, preset: Any = None, epochs: int | None = None,
         batch_size: int | None = None, seed: int = 0, hyperparameters: Any = None,
         origin: str = "tfhash.fit", argument_names: dict | None = None) -> Plan:
    """Checks the settings of a run and merges the caller's over the preset's, without reading data or building a
    model. ``origin`` names the caller in errors, ``argument_names`` its spelling of ``epochs`` and ``batch_size``."""
    names = {"epochs": "epochs", "batch_size": "batch_size", **(argument_names or {})}
    scheme_cls = schemes.get(scheme)
    bits = _validation.check_bits(bits)
    chosen = presets_lib.resolve(scheme_cls, preset)
    settings = chosen.settings(bits)
    hyperparameters = scheme_cls.check_values(dict(hyperparameters or {}), origin=origin, names_only=True)
    hyperparameters = scheme_cls.check_values({**settings["hyperparameters"], **hyperparameters}, bits, origin)
    return Plan(scheme_cls=scheme_cls, preset=chosen, bits=bits, seed=_validation.check_seed(seed),
                epochs=_validation.check_positive_int(
                    settings["epochs"] if epochs is None else epochs, names["epochs"]),
                batch_size=_validation.check_positive_int(
                    settings["batch_size"] if batch_size is None else batch_size, names["batch_size"]),
                hyperparameters=hyperparameters, epochs_from_preset=epochs is None)


@dataclasses.dataclass
class _Steps:
    """How many steps the data gives: ``keras`` per epoch as passed to ``Model.fit`` (None: a dataset's own
    passes end its epochs), ``per_epoch`` as far as known, ``total`` for schedules (None if unknown)."""

    keras: int | None
    per_epoch: int | None
    total: int | None


def _settle_on_data(run, data, steps_per_epoch):
    """Completes ``run`` with what the training data decides (settings from labels, epochs scaled for the data's
    size) and returns its :class:`_Steps`."""
    scheme_cls = run.scheme_cls
    if scheme_cls.needs_labels:
        run.hyperparameters = {**scheme_cls.settings_from_labels(_training_labels(data), run.hyperparameters),
                               **run.hyperparameters}
    keras_steps = steps_per_epoch
    if data.x is not None:
        if data.count < run.batch_size:
            raise ValueError(f"`x` must hold at least one batch ({run.batch_size} items), got {data.count}.")
        steps_per_epoch = keras_steps = data.count // run.batch_size
        if run.epochs_from_preset:
            run.epochs = run.preset.epochs_for(run.epochs, data.count)
    elif steps_per_epoch is None:
        cardinality = int(data.dataset.cardinality())
        steps_per_epoch = cardinality if cardinality > 0 else None
    return _Steps(keras_steps, steps_per_epoch, steps_per_epoch * run.epochs if steps_per_epoch else None)


def _resume_or_build(run, data, steps, strategy, checkpoint_dir, compile_options):
    """``(model, initial epoch, resumed)``: the model restored from ``checkpoint_dir`` when it holds this run, or
    a new one; adapted to the training data unless a resumed model keeps what adapting gives."""
    scheme_cls = run.scheme_cls
    resumed = checkpoints.resumes(checkpoint_dir)
    initial_epoch = 0
    if resumed:
        description = checkpoints.read_description(checkpoint_dir)
        checkpoints.check_resumable(description, checkpoint_dir, scheme_cls, run.bits, data.item_shape,
                                    run.hyperparameters, run.training)
        model, initial_epoch = checkpoints.restore(checkpoint_dir, description, strategy, steps.total,
                                                   hyperparameters=run.hyperparameters, **compile_options)
    else:
        with strategy.scope():
            model = scheme_cls(bits=run.bits, input_shape=data.item_shape, seed=run.seed, **run.hyperparameters)
            model.compile(total_steps=steps.total, **compile_options)
    return model, initial_epoch, resumed


def _adapted(model, run, data, steps, initial_epoch, resumed):
    """The data training goes on (with a frozen backbone's features when the scheme takes them), the model
    adapted to it unless a resumed model keeps what adapting gives."""
    trains = initial_epoch < run.epochs
    given = _features_once(model, data, run.batch_size) if trains else data
    if not resumed or (run.scheme_cls.adapt_on_resume and trains):
        _adapt(model, given, steps.keras)
    return given


def _adapt(model, data, keras_steps):
    if model.backbone_network is not None and data.features is not None:  # networks on a backbone's features
        model.adapt(backbones.adapt_feature_range(model, data.features), data.y)
        return
    if data.x is not None or data.dataset is None:
        model.adapt(data.x, data.y)
        return
    # One epoch's worth of batches: a dataset that never ends would never finish adapting.
    epoch = data.dataset if keras_steps is None else data.dataset.take(keras_steps)
    items = epoch.map(lambda batch: batch["x"])
    labels = epoch.map(lambda labelled: labelled["y"]) if model.needs_labels else None  # AutoGraph tells lambdas
    with _image_range_errors():  # apart by their source: one per line
        model.adapt(items, labels)


def _features_once(model, data, batch_size):
    """The training data with a frozen backbone's features of every item (the scheme's ``features_once``), run
    once here instead of in every epoch's steps; the items stay when the steps need them too. A dataset is read
    once for it when the steps need only the features (and when it ends), else trained on as it is."""
    if model.features_once is None:
        return data
    network = getattr(model, model.features_once)
    if data.x is not None:
        return dataclasses.replace(data, features=network.predict(data.x, batch_size=batch_size, verbose=0))
    if model.features_once_needs_items or data.dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        return data
    features, labels = [], []
    for batch in data.dataset:
        features.append(network(batch["x"], training=False).numpy())
        if "y" in batch:
            labels.append(batch["y"].numpy())
    return _TrainingData(item_shape=data.item_shape, features=np.concatenate(features),
                         y=np.concatenate(labels) if labels else None)


def _train(hasher, run, data, steps, initial_epoch, resumed, checkpoint_dir, callbacks, verbose):
    """Adapts ``hasher.model`` and trains it from ``initial_epoch`` to ``run.epochs``, checkpointing each epoch."""
    model, items = hasher.model, data
    data = _adapted(model, run, items, steps, initial_epoch, resumed)  # a frozen backbone's features, maybe
    guard = _NonFiniteLossGuard()
    all_callbacks = [guard] + model.training_callbacks() + list(callbacks or [])
    if checkpoint_dir is not None:
        os.makedirs(checkpoint_dir, exist_ok=True)
        epoch_variable = tf.Variable(initial_epoch, dtype=tf.int64, trainable=False)
        manager = checkpoints.checkpoint_manager(model, epoch_variable, checkpoint_dir)
        if not resumed or initial_epoch < run.epochs:  # a resumed run with a larger `epochs` records its schedule
            _io.write_json_atomically(os.path.join(checkpoint_dir, checkpoints.CONFIG_FILE), hasher.description())
        all_callbacks.insert(1, checkpoints.EpochCheckpoint(manager, epoch_variable, guard))
    if resumed and verbose:
        done = "training is complete" if initial_epoch >= run.epochs else f"resuming at epoch {initial_epoch + 1}"
        print(f"{checkpoint_dir}: checkpoint after epoch {initial_epoch} of {run.epochs}; {done}.", flush=True)
    if initial_epoch < run.epochs:
        dataset, keras_steps = data.dataset, steps.keras
        if data.count is not None:
            dataset = _epoch_batches(data, run.scheme_cls, run.batch_size, run.seed, initial_epoch, run.epochs)
            keras_steps = data.count // run.batch_size  # (a dataset read once into features: epochs of arrays)
        with warnings.catch_warnings():
            # A finite dataset of unknown size ends each epoch by running out, which is expected here.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            with _image_range_errors():
                hasher.history = model.fit(dataset, epochs=run.epochs, initial_epoch=initial_epoch,
                                           callbacks=all_callbacks, steps_per_epoch=keras_steps, shuffle=False,
                                           verbose=verbose)
    if guard.message is not None:
        where = f"; the last good checkpoint is in {checkpoint_dir!r}" if checkpoint_dir else ""
        raise FloatingPointError(f"training stopped: {guard.message}{where}.")
    if initial_epoch < run.epochs:
        _warn_on_constant_bits(hasher, items)  # on the items themselves


def fit(scheme: str | type, x: ArrayLike | tf.data.Dataset | datasets.RetrievalSplit, y: ArrayLike | None = None, *,
        bits: int = 32, preset: str | os.PathLike | presets_lib.Preset | None = None, epochs: int | None = None,
        batch_size: int | None = None, strategy: tf.distribute.Strategy | None = None,
        callbacks: Sequence[keras.callbacks.Callback] | None = None, seed: int = 0,
        checkpoint_dir: str | os.PathLike | None = None, steps_per_epoch: int | None = None,
        jit_compile: str | bool = "auto", steps_per_execution: int = 1, verbose: str | int = "auto",
        **hyperparameters: Any) -> Hasher:
    """Trains a registered hashing scheme and returns a :class:`~tfhash.hasher.Hasher`.

    Args:
        scheme: registered key (``tfhash.schemes.names()``), e.g. ``"hashgan"``, or a scheme class.
        x: items ``[n, ...]`` -- images as float32 in [0, 1] (uint8 pixels are divided by 255; other values
            are refused) or feature vectors, as the scheme's ``input_kind`` says -- a batched
            ``tf.data.Dataset`` (yielding items, ``(items, labels)`` or dicts with ``"x"``, ``"y"``,
            ``"index"``), a ``tfhash.datasets.RetrievalSplit`` (its training part, with its labels), or a folder
            of images, read from disk at 224x224 (``tfhash.sources.image_folder``; sub-folders are labels).
        y: labels for schemes that train on them (``needs_labels``): class ids ``[n]`` with -1 for
            unlabelled items, or 0/1 multi-hot rows ``[n, classes]`` with all-zero rows unlabelled.
            Unsupervised schemes ignore ``y``.
        bits: code length.
        preset: a name of the scheme's presets (``tfhash.schemes.get(scheme).presets``), a JSON file, or
            ``None`` for the scheme's ``default_preset``. It sets hyperparameters, ``epochs`` and
            ``batch_size`` (per code length where it says so); explicit arguments override it.
        epochs: passes over the training data (default: the preset's).
        batch_size: global batch size (default: the preset's), split across replicas under a strategy;
            the last incomplete batch is dropped so every step sees the same global batch.
        strategy: a ``tf.distribute.Strategy``; default: the current one.
        callbacks: Keras callbacks, passed to ``Model.fit``.
        seed: seeds initialisation, shuffling and all training noise.
        checkpoint_dir: where a checkpoint is written after each epoch (the last two are kept); rerunning
            with the same directory resumes from the last saved epoch (model and optimizers' state).
            Resuming with other hyperparameters, seed or batch size is refused; a larger ``epochs``
            continues the run, its learning-rate schedule stretched to the new number of steps.
        steps_per_epoch: batches per epoch of a ``tf.data.Dataset`` ``x`` (default: one pass over it). Needed
            for a dataset that never ends (``.repeat()`` without a count), which is refused without it; a
            finite dataset of unknown size trains one pass per epoch.
        jit_compile: XLA compilation of the step, as ``Model.compile`` takes it (``"auto"``: on with a GPU and no
            strategy); a scheme with ``supports_jit = False`` falls back with Keras's warning.
        steps_per_execution: training steps per call of the compiled step, as ``Model.compile`` takes it.
        verbose: Keras progress output.
        **hyperparameters: the scheme's constructor arguments (loss weights, network, ...).
    """
    run = plan(scheme, bits=bits, preset=preset, epochs=epochs, batch_size=batch_size, seed=seed,
               hyperparameters=hyperparameters)  # before any data is read
    if jit_compile not in ("auto", True, False):
        raise ValueError(f"`jit_compile` must be 'auto', True or False, got {jit_compile!r}.")
    compile_options = {"jit_compile": jit_compile, "steps_per_execution": _validation.check_positive_int(
        steps_per_execution, "steps_per_execution")}
    if steps_per_epoch is not None:
        steps_per_epoch = _validation.check_positive_int(steps_per_epoch, "steps_per_epoch")
    if checkpoint_dir is not None:
        checkpoint_dir = checkpoints.check_run_directory(checkpoint_dir, "checkpoint_dir")
    strategy = strategy or tf.distribute.get_strategy()
    data = _prepare_data(x, y, run.scheme_cls, steps_per_epoch, run)
    steps = _settle_on_data(run, data, steps_per_epoch)
    model, initial_epoch, resumed = _resume_or_build(run, data, steps, strategy, checkpoint_dir, compile_options)
    hasher = Hasher(model, epoch=max(run.epochs, initial_epoch), preset=run.preset.name, training=run.training)
    _train(hasher, run, data, steps, initial_epoch, resumed, checkpoint_dir, callbacks, verbose)
    return hasher


CONSTANT_BITS_SAMPLE = 1024  # training items encoded after training to look for bits that never change


def constant_bits(codes: ArrayLike, bits: int) -> int:
    """How many of the ``bits`` code bits take one value in every row of packed uint8 ``codes``."""
    unpacked = codes_lib.unpack(codes, bits)
    return int(np.sum(unpacked.min(axis=0) == unpacked.max(axis=0)))


def _warn_on_constant_bits(hasher, data):
    """Warns when some bits are the same for every training item checked: they tell no items apart, and all of
    them at once means training collapsed (a typical cause: ReLUs killed by too high a learning rate)."""
    if data.x is not None:  # spread over the array: items sorted by class would share bits over a run of them
        codes = hasher.encode(data.x[::max(1, len(data.x) // CONSTANT_BITS_SAMPLE)][:CONSTANT_BITS_SAMPLE])
    else:
        parts, count = [], 0
        for batch in data.dataset:  # the first batches only (a dataset may never end), encoded one at a time
            parts.append(hasher.encode(batch["x"].numpy()))
            count += len(parts[-1])
            if count >= CONSTANT_BITS_SAMPLE:
                break
        codes = np.concatenate(parts)[:CONSTANT_BITS_SAMPLE] if parts else np.zeros((0, 1), np.uint8)
    if len(codes) < 2:
        return
    bits = hasher.model.bits
    constant = constant_bits(codes, bits)
    if constant:
        everything = " (every item has the same code: training collapsed)" if constant == bits else ""
        warnings.warn(f"tfhash.fit: {constant} of {bits} bits are the same for all {len(codes)} training items "
                      f"checked{everything}; such bits tell no items apart. Look at the losses in hasher.history; a "
                      "lower learning_rate or another preset may train.", RuntimeWarning, stacklevel=3)
