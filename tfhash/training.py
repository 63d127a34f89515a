"""``tfhash.fit``: train any registered scheme on arrays, a ``tf.data.Dataset`` or a retrieval split.

The returned :class:`Hasher` encodes, evaluates against the shallow baselines, builds a search index,
and saves / loads checkpoints that resume training (model and every optimizer's state).
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from tfhash import _io, _validation, datasets, evaluation, schemes
from tfhash import index as index_lib

CONFIG_FILE = "tfhash_config.json"
CHECKPOINT_PREFIX = "ckpt"


def _checkpoint(model, epoch):
    return tf.train.Checkpoint(model=model, epoch=epoch,
                               **{f"optimizer_{name}": opt for name, opt in model.scheme_optimizers.items()})


def _checkpoint_manager(model, epoch, directory):
    """Keeps the last two checkpoints of model, optimizers and epoch counter in ``directory``."""
    return tf.train.CheckpointManager(_checkpoint(model, epoch), directory, max_to_keep=2,
                                      checkpoint_name=CHECKPOINT_PREFIX)


class BaseHasher:
    """What every hasher offers on top of ``encode``: evaluation and a search index.

    Subclasses provide ``bits``, ``scheme`` and ``encode(x)``.
    """

    def evaluate(self, split, *, baselines=("lsh", "pcah", "itq", "sph", "sh"), top_k=1000, radius=2, seed=0,
                 pr_curve=False, log=print):
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

    def index(self, database_x, ids=None, backend="numpy", **options):
        """A search index (``tfhash.index``) over the codes of ``database_x``."""
        return index_lib.make_index(self.bits, backend, **options).add(self.encode(database_x), ids=ids)


class Hasher(BaseHasher):
    """A trained scheme: ``encode``, ``evaluate``, ``index``, ``save`` / ``load``, ``export``.

    Attributes:
        model: the underlying :class:`~tfhash.schemes.base.HashingScheme` (a ``keras.Model``).
        history: the ``keras.callbacks.History`` of the last fit (``None`` after ``load``).
    """

    def __init__(self, model, history=None, epoch=0):
        self.model = model
        self.history = history
        self.epoch = epoch

    @property
    def bits(self):
        return self.model.bits

    @property
    def scheme(self):
        return self.model.key

    def __repr__(self):
        return f"Hasher(scheme={self.scheme!r}, bits={self.bits}, input_shape={self.model.item_shape}, epoch={self.epoch})"

    def encode(self, x, batch_size=256):
        """Packed uint8 codes ``[n, ceil(bits / 8)]`` (the same graph the export saves)."""
        return self.model.encode(x, batch_size=batch_size)

    def predict_probabilities(self, x, batch_size=256):
        return self.model.predict_probabilities(x, batch_size=batch_size)

    @property
    def trained(self):
        """True once any optimizer has taken a step."""
        return any(int(o.iterations.numpy()) > 0 for o in self.model.scheme_optimizers.values())

    def export(self, path, *, overwrite=False):
        """Writes a SavedModel of the encoder only (see :func:`tfhash.export.export_saved_model`)."""
        from tfhash import export

        return export.export_saved_model(self, path, overwrite=overwrite)

    def save(self, directory):
        """Writes the scheme's config and a checkpoint (model + optimizers) to ``directory``."""
        if os.path.isfile(directory):
            raise ValueError(f"`directory` must be a directory path, got an existing file {directory!r}.")
        os.makedirs(directory, exist_ok=True)
        epoch = tf.Variable(self.epoch, dtype=tf.int64, trainable=False)
        manager = _checkpoint_manager(self.model, epoch, directory)
        manager.save()
        _io.write_json_atomically(os.path.join(directory, CONFIG_FILE), _describe(self.model))
        return directory

    @classmethod
    def load(cls, directory):
        """Rebuilds a hasher from a directory written by :meth:`save` or ``fit(checkpoint_dir=...)``."""
        model, epoch = _restore(directory)
        return cls(model, epoch=epoch)


def _describe(model):
    return {"scheme": model.key, "config": model.get_config(), "total_steps": model.total_steps}


def _restore(directory, strategy=None, total_steps="saved"):
    config_path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise ValueError(f"`directory` must hold a tfhash checkpoint ({CONFIG_FILE} missing): {directory!r}.")
    with open(config_path, encoding="utf-8") as f:
        description = json.load(f)
    with (strategy or tf.distribute.get_strategy()).scope():
        model = schemes.get(description["scheme"]).from_config(description["config"])
        model.compile(total_steps=description.get("total_steps") if total_steps == "saved" else total_steps)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    latest = tf.train.latest_checkpoint(directory)
    if latest is None:
        raise ValueError(f"`directory` holds no checkpoint files: {directory!r}.")
    _checkpoint(model, epoch).restore(latest).expect_partial()
    return model, int(epoch.numpy())


class _EpochCheckpoint(keras.callbacks.Callback):
    """Saves model + optimizers at each epoch end, unless a loss went non-finite in that epoch."""

    def __init__(self, manager, epoch_variable, guard):
        super().__init__()
        self.manager, self.epoch_variable, self.guard = manager, epoch_variable, guard

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.message is None:
            self.epoch_variable.assign(epoch + 1)
            self.manager.save(checkpoint_number=epoch + 1)


class _NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops training at the first batch whose logged losses are NaN or inf, naming them."""

    def __init__(self):
        super().__init__()
        self.message = None

    def on_train_batch_end(self, batch, logs=None):
        bad = sorted(k for k, v in (logs or {}).items() if not np.all(np.isfinite(np.asarray(v, dtype=float))))
        if bad and self.message is None:
            self.message = f"loss term(s) {bad} became non-finite at batch {batch}"
            self.model.stop_training = True


def _same_setting(saved, asked):
    if isinstance(saved, float) and isinstance(asked, (int, float)) and not isinstance(asked, bool):
        return saved == float(asked)
    if isinstance(asked, tuple):
        asked = list(asked)
    return saved == asked


def _prepare_data(x, y, scheme_cls):
    """Returns (float32 array or None, dataset or None, item shape, sample count or None), after the
    scheme's check of the items' dtype."""
    if isinstance(x, datasets.RetrievalSplit):
        x = x.train_x
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        spec = spec[0] if isinstance(spec, (tuple, list)) else spec
        if spec.shape.rank is None or spec.shape.rank < 2 or None in spec.shape[1:]:
            raise ValueError(f"`x` dataset must yield batches [batch, ...] of a fixed item shape, got element spec {spec}.")
        scheme_cls.check_training_dtype(spec.dtype.as_numpy_dtype)
        return None, x, tuple(spec.shape[1:]), None
    if not isinstance(x, np.ndarray) and not hasattr(x, "__array__"):
        raise ValueError(f"`x` must be an array, a tf.data.Dataset or a RetrievalSplit, got {type(x).__name__}.")
    x = _validation.check_features(np.asarray(x), "x")
    if x.ndim < 2:
        raise ValueError(f"`x` must be [n, ...] items, got shape {x.shape}.")
    scheme_cls.check_training_dtype(x.dtype)
    return x.astype(np.float32, copy=False), None, tuple(x.shape[1:]), x.shape[0]


def _epoch_batches(array, batch_size, seed, first_epoch, epochs):
    """Batches for epochs ``first_epoch..epochs-1``; epoch e's order depends only on (seed, e).

    So a run resumed at epoch e sees exactly the batches an uninterrupted run would have seen.
    """
    items = tf.convert_to_tensor(array)
    count = array.shape[0]

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(count), seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=True)

    return (tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch)
            .map(lambda index: tf.gather(items, index), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def fit(scheme, x, y=None, *, bits=32, epochs=50, batch_size=100, strategy=None, callbacks=None, seed=0,
        checkpoint_dir=None, verbose="auto", **hyperparameters):
    """Trains a registered hashing scheme and returns a :class:`Hasher`.

    Args:
        scheme: registered key (``tfhash.schemes.names()``), e.g. ``"hashgan"``.
        x: float32 items ``[n, ...]`` (images in [0, 1]), a ``tf.data.Dataset`` of *batched* items, or a
            ``tfhash.datasets.RetrievalSplit`` (its training part is used).
        y: labels, for semi-supervised schemes only (unsupervised schemes ignore them).
        bits: code length.
        epochs: passes over the training data.
        batch_size: global batch size (split across replicas under a strategy); the last
            incomplete batch is dropped so every step sees the same global batch.
        strategy: a ``tf.distribute.Strategy``; default: the current one.
        callbacks: Keras callbacks, passed to ``Model.fit``.
        seed: seeds initialisation, shuffling and all training noise.
        checkpoint_dir: where a checkpoint is written after each epoch; rerunning with the same
            directory resumes from the last saved epoch (model and optimizers' state).
        verbose: Keras progress output.
        **hyperparameters: the scheme's constructor arguments (loss weights, network, ...).
    """
    scheme_cls = schemes.get(scheme)
    bits = _validation.check_bits(bits)
    epochs = _validation.check_positive_int(epochs, "epochs")
    batch_size = _validation.check_positive_int(batch_size, "batch_size")
    known = scheme_cls.hyperparameter_names()
    unknown = sorted(set(hyperparameters) - set(known))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown} for scheme {scheme!r}; known: {known}.")
    strategy = strategy or tf.distribute.get_strategy()
    array, dataset, item_shape, count = _prepare_data(x, y, scheme_cls)
    keras.utils.set_random_seed(seed)  # before the shuffled dataset and the weights are made
    if array is not None:
        if count < batch_size:
            raise ValueError(f"`x` must hold at least one batch ({batch_size} items), got {count}.")
        steps_per_epoch = count // batch_size
    else:
        cardinality = int(dataset.cardinality())
        steps_per_epoch = cardinality if cardinality > 0 else None
    total_steps = steps_per_epoch * epochs if steps_per_epoch else None

    initial_epoch = 0
    resumed = checkpoint_dir is not None and os.path.isfile(os.path.join(checkpoint_dir, CONFIG_FILE))
    if resumed:
        model, initial_epoch = _restore(checkpoint_dir, strategy, total_steps)
        if model.key != scheme_cls.key or model.bits != bits or tuple(model.item_shape) != item_shape:
            raise ValueError(f"`checkpoint_dir` {checkpoint_dir!r} holds a {model.key!r} model with bits="
                             f"{model.bits} and input shape {model.item_shape}; this call asks for {scheme!r}, "
                             f"bits={bits}, input shape {item_shape}. Use another directory.")
        saved = model.get_config()
        differing = {k: (saved.get(k), v) for k, v in hyperparameters.items() if not _same_setting(saved.get(k), v)}
        if differing:
            details = ", ".join(f"{k}: saved {a!r}, asked {b!r}" for k, (a, b) in sorted(differing.items()))
            raise ValueError(f"`checkpoint_dir` {checkpoint_dir!r} was trained with other hyperparameters ({details}); "
                             "resume with the saved ones or use another directory.")
    else:
        with strategy.scope():
            model = scheme_cls(bits=bits, input_shape=item_shape, seed=seed, **hyperparameters)
            model.compile(total_steps=total_steps)
        model.adapt(array if array is not None else dataset)

    guard = _NonFiniteLossGuard()
    all_callbacks = [guard] + list(callbacks or [])
    epoch_variable = tf.Variable(initial_epoch, dtype=tf.int64, trainable=False)
    if checkpoint_dir is not None:
        if os.path.isfile(checkpoint_dir):
            raise ValueError(f"`checkpoint_dir` must be a directory, got an existing file {checkpoint_dir!r}.")
        os.makedirs(checkpoint_dir, exist_ok=True)
        manager = _checkpoint_manager(model, epoch_variable, checkpoint_dir)
        if not resumed:
            _io.write_json_atomically(os.path.join(checkpoint_dir, CONFIG_FILE), _describe(model))
        all_callbacks.insert(1, _EpochCheckpoint(manager, epoch_variable, guard))

    if resumed and verbose:
        done = "training is complete" if initial_epoch >= epochs else f"resuming at epoch {initial_epoch + 1}"
        print(f"{checkpoint_dir}: checkpoint after epoch {initial_epoch} of {epochs}; {done}.", flush=True)
    history = None
    if initial_epoch < epochs:
        if array is not None:
            dataset = _epoch_batches(array, batch_size, seed, initial_epoch, epochs)
        history = model.fit(dataset, epochs=epochs, initial_epoch=initial_epoch, callbacks=all_callbacks,
                            steps_per_epoch=steps_per_epoch if array is not None else None, shuffle=False,
                            verbose=verbose)
    if guard.message is not None:
        where = f"; the last good checkpoint is in {checkpoint_dir!r}" if checkpoint_dir else ""
        raise FloatingPointError(f"training stopped: {guard.message}{where}.")
    return Hasher(model, history=history, epoch=max(epochs, initial_epoch))
