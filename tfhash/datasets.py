"""Data for hashing experiments: retrieval splits and the sources they are built from.

A :class:`RetrievalSplit` holds three parts -- ``train``, ``query`` and ``database`` -- as numpy
arrays, with ``tf.data`` views from :meth:`RetrievalSplit.dataset`. :func:`make_split` applies the
protocols of the hashing papers to any arrays; :func:`load` does the same for named data sets.

**Images are float32 in [0, 1]**, shaped ``[n, height, width, channels]`` (grey images get one
channel); feature vectors stay as they are (float32 ``[n, d]``). Labels are int64 class ids ``[n]``
or 0/1 multi-hot ``[n, classes]`` (relevance = at least one shared label).

Sources:

* numpy arrays: :func:`make_split`;
* ``"digits"``: scikit-learn's bundled 8x8 digits (1,797 images; works offline, the default);
* TFDS names (``mnist``, ``fashion_mnist``, ``cifar10``, ``stl10``, ``svhn_cropped``, ...) through
  ``tfds.load`` with ``data_dir`` / ``download`` passed through;
* original distribution files: MNIST-style IDX (``.gz`` or not) with :func:`load_mnist_idx`, the
  CIFAR-10 python batches with :func:`load_cifar10_batches`, either found in a directory by
  :func:`load_local` (which also reads ``.npz`` arrays);
* ANN feature files: ``.fvecs``, ``.bvecs``, ``.ivecs``, ``.npy`` with :func:`read_features`
  (memory-mapped), train / query / database files with :func:`load_feature_files`;
* synthetic feature vectors with neighbourhood structure: :func:`make_gaussian_mixture`.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:  # TensorFlow is imported by the functions that use it
    import tensorflow as tf

from tfhash import _validation

# TFDS names with the splits that together form the whole labelled set (HashGAN Sec. 4.1 draws the
# queries from all labelled images and uses the rest as database).
TFDS_DATASETS = {
    "mnist": "train+test",
    "fashion_mnist": "train+test",
    "cifar10": "train+test",
    "stl10": "train+test",
    "svhn_cropped": "train+test",
}
BUNDLED_DATASETS = ("digits",)
# Items in each known data set (the TFDS splits above), so a batch larger than the data is refused before loading.
KNOWN_SIZES = {"digits": 1797, "mnist": 70000, "fashion_mnist": 70000, "cifar10": 60000, "stl10": 13000,
               "svhn_cropped": 99289}
_TFDS_HOST = "storage.googleapis.com"


@dataclasses.dataclass
class RetrievalSplit:
    """Train / query / database parts of a retrieval experiment.

    Attributes:
        train_x, train_y: what the hash function is trained on (labels only for evaluation or
            semi-supervised schemes).
        query_x, query_y: the queries.
        database_x, database_y: the items searched.
        name: where the data came from.
        train_is_database: True under the HashGAN protocol (training on the database itself).
    """

    train_x: np.ndarray
    train_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray
    database_x: np.ndarray
    database_y: np.ndarray
    name: str = "arrays"
    train_is_database: bool = False
    validation_index: np.ndarray = None

    PARTS = ("train", "query", "database")

    @property
    def has_validation(self) -> bool:
        return self.validation_index is not None

    def validation(self) -> RetrievalSplit:
        """The validation split: queries drawn from the training items (``make_split(validation_per_class=...)``),
        searched among the *other* training items, so no query retrieves itself and no test query is seen.
        Settings are chosen on it; the test queries only report the chosen setting.
        """
        if self.validation_index is None:
            raise ValueError("this split has no validation queries: build it with make_split(..., "
                             "validation_per_class=N) or num_validation=N.")
        rest = np.setdiff1d(np.arange(self.train_x.shape[0]), self.validation_index)
        return RetrievalSplit(
            train_x=self.train_x, train_y=self.train_y,
            query_x=self.train_x[self.validation_index], query_y=self.train_y[self.validation_index],
            database_x=self.train_x[rest], database_y=self.train_y[rest], name=f"{self.name}/validation")

    @property
    def multilabel(self) -> bool:
        return self.database_y.ndim == 2

    @property
    def num_classes(self) -> int:
        if self.multilabel:
            return int(self.database_y.shape[1])
        return int(np.unique(np.concatenate([self.database_y, self.query_y])).size)

    @property
    def input_shape(self) -> tuple:
        return tuple(self.train_x.shape[1:])

    def arrays(self, part: str) -> tuple:
        """``(x, y)`` of ``part`` (``"train"``, ``"query"`` or ``"database"``)."""
        _validation.check_choice(part, "part", self.PARTS)
        return getattr(self, f"{part}_x"), getattr(self, f"{part}_y")

    def partial_labels(self, labelled_per_class: int, seed: int = 0) -> np.ndarray:
        """Training labels of a semi-supervised run: ``labelled_per_class`` random training items of each class keep
        their class id, every other item gets -1 (unlabelled). Validation queries are never labelled, so validation
        figures measure items the labels did not show. Single-label splits only."""
        if self.multilabel:
            raise ValueError("`partial_labels` draws items per class: it needs class ids, got multi-hot labels.")
        keep = np.ones(self.train_y.shape[0], bool)
        if self.validation_index is not None:
            keep[self.validation_index] = False
        candidates = np.flatnonzero(keep)
        rng = np.random.default_rng([int(seed), 7])
        chosen = candidates[_draw_per_class(self.train_y[candidates], labelled_per_class, rng, "labelled_per_class")]
        labels = np.full(self.train_y.shape[0], -1, np.int64)
        labels[chosen] = self.train_y[chosen]
        return labels

    def dataset(self, part: str = "train", *, batch_size: int | None = None, labels: bool = False,
                shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
        """A ``tf.data.Dataset`` over ``part``: ``x`` or ``(x, y)``, optionally shuffled and batched."""
        import tensorflow as tf

        x, y = self.arrays(part)
        data = tf.data.Dataset.from_tensor_slices((x, y) if labels else x)
        if shuffle:
            data = data.shuffle(x.shape[0], seed=seed, reshuffle_each_iteration=True)
        if batch_size is not None:
            data = data.batch(_validation.check_positive_int(batch_size, "batch_size"))
        return data

    def __repr__(self):
        return (f"RetrievalSplit(name={self.name!r}, train={self.train_x.shape[0]}, "
                f"query={self.query_x.shape[0]}, database={self.database_x.shape[0]}, "
                f"input_shape={self.input_shape}, classes={self.num_classes}, "
                f"train_is_database={self.train_is_database}"
                + (f", validation={self.validation_index.size}" if self.has_validation else "") + ")")


def _class_ids(y):
    """Per item, the classes it belongs to, as a list of index arrays per class."""
    if y.ndim == 1:
        classes = np.unique(y)
        return classes, [np.flatnonzero(y == c) for c in classes]
    return np.arange(y.shape[1]), [np.flatnonzero(y[:, c] != 0) for c in range(y.shape[1])]


def _draw_some(n, count, name, what, rng):
    """``count`` sorted random positions out of ``n`` (fewer than ``n``: some must be left)."""
    count = _validation.check_positive_int(count, name)
    if count >= n:
        raise ValueError(f"`{name}` must be smaller than {what} ({n}), got {count}.")
    return np.sort(rng.choice(n, count, replace=False))


def _draw_queries(y, rng, queries_per_class, num_queries):
    """Positions of the test queries: ``num_queries`` random items, or ``queries_per_class`` of each class."""
    if num_queries is not None:
        return _draw_some(y.shape[0], num_queries, "num_queries", "the number of items", rng)
    if y.ndim == 2:
        raise ValueError("`num_queries` is required for multi-label `y` (per-class queries are ambiguous "
                         "when an item has several labels), got None.")
    return _draw_per_class(y, queries_per_class, rng, "queries_per_class")


def _draw_training(y, database, rng, train_per_class, train_size, disjoint_train):
    """Positions of the training items among the ``database`` positions (all of them by default)."""
    if train_per_class is not None and train_size is not None:
        raise ValueError("Give at most one of `train_per_class` and `train_size`, got both.")
    if train_per_class is None and train_size is None:
        if disjoint_train:
            raise ValueError("`disjoint_train=True` needs `train_per_class` or `train_size`.")
        return database
    if train_size is not None:
        train_size = _validation.check_positive_int(train_size, "train_size")
        if train_size > database.size:
            raise ValueError(f"`train_size` must be at most the database size ({database.size}), got {train_size}.")
        return np.sort(rng.choice(database, train_size, replace=False))
    if y.ndim == 2:
        raise ValueError("`train_per_class` needs single-label `y`; use `train_size` for multi-label data.")
    per_class = _validation.check_positive_int(train_per_class, "train_per_class")
    picks = []
    for c in np.unique(y):
        members = database[y[database] == c]
        if members.size < per_class:
            raise ValueError(f"`train_per_class` ({per_class}) exceeds the database items of class {c} "
                             f"({members.size}).")
        picks.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(picks))


def make_split(x: ArrayLike, y: ArrayLike, *, queries_per_class: int = 100, num_queries: int | None = None,
               train_per_class: int | None = None, train_size: int | None = None,
               disjoint_train: bool = False, validation_per_class: int | None = None,
               num_validation: int | None = None, seed: int = 0, name: str = "arrays") -> RetrievalSplit:
    """Splits labelled data into queries, database and training set, the way hashing papers do.

    Queries: ``queries_per_class`` random items of each class (single-label; HashGAN Sec. 4.1 uses 100),
    or ``num_queries`` random items overall (required reading for multi-label data, e.g. NUS-WIDE 2,100).
    The rest is the database. Training set: the database itself by default (the HashGAN protocol), or
    ``train_per_class`` / ``train_size`` random database items; with ``disjoint_train=True`` those are
    also removed from the database.

    Validation queries (for choosing settings, :meth:`RetrievalSplit.validation`): ``validation_per_class``
    random training items of each class, or ``num_validation`` random training items; never test queries.
    They are drawn after everything else, so the test queries and training set of a seed do not change.

    Args:
        x: items ``[n, ...]`` (images in [0, 1] or feature vectors).
        y: int class ids ``[n]`` or 0/1 multi-hot ``[n, classes]``.
        seed: every random draw derives from it.

    Returns:
        :class:`RetrievalSplit`.
    """
    x = _validation.check_features(x, "x")
    y = _validation.check_labels(y, "y", x.shape[0], "x")
    rng = np.random.default_rng(seed)
    query = _draw_queries(y, rng, queries_per_class, num_queries)
    database = np.setdiff1d(np.arange(x.shape[0]), query)
    train = _draw_training(y, database, rng, train_per_class, train_size, disjoint_train)
    if disjoint_train:
        database = np.setdiff1d(database, train)
    validation = _draw_validation(y[train], rng, validation_per_class, num_validation)

    return RetrievalSplit(
        train_x=x[train], train_y=y[train], query_x=x[query], query_y=y[query],
        database_x=x[database], database_y=y[database], name=name,
        train_is_database=train is database, validation_index=validation,
    )


def _draw_validation(train_y, rng, per_class, count):
    """Positions (in the training set) of the validation queries, or None."""
    if per_class is not None and count is not None:
        raise ValueError("Give at most one of `validation_per_class` and `num_validation`, got both.")
    if count is not None:
        return _draw_some(train_y.shape[0], count, "num_validation", "the training set", rng)
    if per_class is None:
        return None
    if train_y.ndim == 2:
        raise ValueError("`validation_per_class` needs single-label `y`; use `num_validation` for multi-label data.")
    return _draw_per_class(train_y, per_class, rng, "validation_per_class")


def _draw_per_class(y, per_class, rng, name):
    """Sorted positions of ``per_class`` random items of each class (single-label ``y``); every class must
    keep at least one item besides them."""
    per_class = _validation.check_positive_int(per_class, name)
    classes, members = _class_ids(y)
    small = [(int(c), m.size) for c, m in zip(classes, members) if m.size <= per_class]
    if small:
        raise ValueError(f"`{name}` ({per_class}) must be smaller than every class size; "
                         f"classes with too few items (class, size): {small[:5]}.")
    return np.sort(np.concatenate([rng.choice(m, per_class, replace=False) for m in members]))


# ---------------------------------------------------------------------------------------------------
# Sources that return (x, y) arrays.


def _images_to_unit_range(images):
    """uint8 images ``[n, h, w(, c)]`` -> float32 ``[n, h, w, c]`` in [0, 1]."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    return images.astype(np.float32) / 255.0


def load_digits() -> tuple:
    """scikit-learn's bundled digits: float32 ``[1797, 8, 8, 1]`` in [0, 1] (pixel / 16), int64 labels."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[..., None]
    return x, bunch.target.astype(np.int64)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (the MNIST distribution format), gzipped or not, into a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"`path` must be an IDX file (magic 0x0000TTDD), got {path!r}.")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"`path` has an unknown IDX element type 0x{data[2]:02x}: {path!r}.")
    ndim = data[3]
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    array = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"`path` is truncated: header says shape {shape}, file holds {array.size} values.")
    return array.reshape(shape).astype(array.dtype.newbyteorder("="))


def load_mnist_idx(images_path: str | os.PathLike, labels_path: str | os.PathLike) -> tuple:
    """MNIST-style IDX files (e.g. ``t10k-images-idx3-ubyte.gz``) -> float32 images in [0, 1], labels."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"`images_path` holds {images.shape[0]} images but `labels_path` holds "
                         f"{labels.shape[0]} labels.")
    return _images_to_unit_range(images), labels.astype(np.int64)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: no other code can run."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")


def load_cifar10_batches(directory: str | os.PathLike, batches: Sequence[str] | None = None) -> tuple:
    """CIFAR-10 python batches (``data_batch_1..5``, ``test_batch``) -> images ``[n, 32, 32, 3]``, labels.

    The files are pickles; they are read with an unpickler that admits numpy arrays only.
    """
    names = batches or [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not os.path.isfile(os.path.join(directory, n))]
    if missing:
        raise ValueError(f"`directory` must hold the CIFAR-10 python batches; missing {missing} in {directory!r}.")
    images, labels = [], []
    for name in names:
        with open(os.path.join(directory, name), "rb") as f:
            batch = _NumpyOnlyUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return _images_to_unit_range(np.concatenate(images)), np.concatenate(labels)


def _read_vecs(path, dtype, max_items=None):
    """``.fvecs``/``.ivecs``/``.bvecs``: each vector is an int32 dimension d followed by d values.

    Memory-mapped: the result is a read-only view into the file (rows strided past the headers), so
    a large file is read from disk as it is used, never copied whole.
    """
    size = os.path.getsize(path)
    if size < 4:
        raise ValueError(f"`path` is empty or not a vecs file: {path!r}.")
    dim = int(np.fromfile(path, dtype="<i4", count=1)[0])
    item_size = np.dtype(dtype).itemsize
    row = 4 + dim * item_size
    if dim <= 0 or size % row:
        raise ValueError(f"`path` is not a valid vecs file: the first record header says dimension {dim}, but the "
                         f"file size {size} is not a multiple of the record size {row} bytes: {path!r}.")
    count = size // row if max_items is None else min(size // row, int(max_items))
    rows = np.memmap(path, dtype=np.uint8, mode="r", shape=(count, row))
    headers = np.ndarray((count,), dtype="<i4", buffer=rows, strides=(row,))
    wrong = np.flatnonzero(headers != dim)
    if wrong.size:
        raise ValueError(f"`path` has inconsistent record headers: record {int(wrong[0])} says dimension "
                         f"{int(headers[wrong[0]])}, the first says {dim} ({wrong.size} records differ): {path!r}.")
    return np.ndarray((count, dim), dtype=np.dtype(dtype).newbyteorder("<"), buffer=rows, offset=4,
                      strides=(row, item_size))


def read_features(path: str | os.PathLike, max_items: int | None = None) -> np.ndarray:
    """Feature vectors from ``.fvecs`` (float32), ``.bvecs`` (uint8), ``.ivecs`` (int32) or ``.npy``.

    ``.fvecs``/``.bvecs``/``.ivecs`` are memory-mapped (a read-only view into the file, read as used);
    ``.npy`` files are loaded without pickle. ``max_items`` (a positive integer) keeps the first rows only.
    """
    path = os.fspath(path)
    if max_items is not None:
        max_items = _validation.check_positive_int(max_items, "max_items")
    readers = {".fvecs": np.float32, ".bvecs": np.uint8, ".ivecs": np.int32}
    ext = os.path.splitext(path)[1].lower()
    if not os.path.isfile(path):
        raise ValueError(f"`path` must be an existing feature file, got {path!r}.")
    if ext == ".npy":
        try:
            data = np.load(path, allow_pickle=False, mmap_mode="r")
        except ValueError as err:  # object arrays need pickle, which could run code
            raise ValueError(f"`path` must hold a plain numeric .npy array (pickled objects are refused): "
                             f"{path!r} ({err})") from err
        return data if max_items is None else data[:max_items]
    if ext not in readers:
        raise ValueError(f"`path` must end in one of {sorted(readers) + ['.npy']}, got {path!r}.")
    return _read_vecs(path, readers[ext], max_items)


def _tfds_offline_message(name, data_dir):
    where = data_dir or "~/tensorflow_datasets"
    return (
        f"TFDS data set {name!r} is not prepared in {where!r} and cannot be downloaded (no network). "
        f"To use it offline: on a machine with network run `tfds build {name} --data_dir=DIR` (or "
        f"tfds.load({name!r}, data_dir=DIR)) and copy DIR here, then pass data_dir=DIR (trainer: "
        "--data_dir=DIR); or put the original files (MNIST IDX, CIFAR-10 python batches) in a directory and "
        "load it with tfhash.datasets.load(DIR) (trainer: --dataset=DIR)."
    )


def _host_reachable(host):
    """Whether ``host``'s name resolves: offline, TFDS retries its downloads for minutes before failing, and
    TFDS offers no check of its own (tested by ``test_the_download_host_probe_tells_names_that_resolve``)."""
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def load_tfds(name: str, *, data_dir: str | os.PathLike | None = None, download: bool = True,
              split: str | None = None) -> tuple:
    """Loads a TFDS image data set into arrays: float32 images in [0, 1] and int64 labels.

    When the data is not prepared in ``data_dir`` and the download host cannot be reached, this fails
    at once with instructions for offline use instead of retrying downloads for minutes.
    """
    import tensorflow_datasets as tfds

    split = split or TFDS_DATASETS.get(name, "train")
    if name not in tfds.list_builders():
        raise ValueError(f"`name` must be a TFDS data set (see tfds.list_builders()), got {name!r}.")

    def read(may_download):
        data = tfds.load(name, split=split, data_dir=data_dir, download=may_download, as_supervised=True)
        parts = list(tfds.as_numpy(data.batch(4096)))
        if not parts:
            raise ValueError(f"TFDS data set {name!r} split {split!r} is empty.")
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    try:
        images, labels = read(False)  # prepared data (or tfds.testing.mock_data) needs no network
    except AssertionError as err:
        # Fail at once when offline rather than after minutes of download retries.
        if not download or not _host_reachable(_TFDS_HOST):
            raise ValueError(_tfds_offline_message(name, data_dir)) from err
        try:
            images, labels = read(True)
        except OSError as download_err:
            raise ValueError(_tfds_offline_message(name, data_dir) +
                             f" ({type(download_err).__name__}: {download_err})") from download_err
    return _images_to_unit_range(images), np.asarray(labels).astype(np.int64)


def _npz_images(images, path):
    """Images from an .npz as float32 ``[n, h, w, c]`` in [0, 1]: integer pixels must be 0-255 and are scaled,
    float pixels must already be in [0, 1]; a 3-D array gets a channel axis."""
    if images.ndim not in (3, 4) or images.shape[0] == 0:
        raise ValueError(f"`path` must hold images [n, height, width(, channels)] with n >= 1, got shape "
                         f"{images.shape} in {path!r}.")
    if images.dtype.kind in "iu":
        low, high = int(images.min()), int(images.max())
        if low < 0 or high > 255:
            raise ValueError(f"`path` holds integer images with values in [{low}, {high}]; integer pixels must be "
                             f"0-255: {path!r}.")
        return _images_to_unit_range(images)
    if images.dtype.kind != "f":
        raise ValueError(f"`path` must hold numeric images (uint8 0-255 or float in [0, 1]), got dtype "
                         f"{images.dtype} in {path!r}.")
    images = images.astype(np.float32)
    if not np.all(np.isfinite(images)):
        raise ValueError(f"`path` holds images with NaN or inf values: {path!r}.")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 1:
        raise ValueError(f"`path` holds float images with values in [{low:g}, {high:g}]; float pixels must be in "
                         f"[0, 1] (divide 0-255 values by 255, or store uint8): {path!r}.")
    return images if images.ndim == 4 else images[..., None]


def _npz_labels(labels, num_images, path):
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or labels.shape[0] != num_images or labels.dtype.kind not in "iu":
        raise ValueError(f"`path` must hold integer class labels [n] with one per image ({num_images}), got dtype "
                         f"{labels.dtype} and shape {labels.shape} in {path!r}.")
    return labels.astype(np.int64)


def load_local(path: str | os.PathLike) -> tuple:
    """Images and labels from files on disk, recognised by their layout:

    * a directory with MNIST-style IDX files (``*images-idx3-ubyte[.gz]`` and the matching
      ``*labels-idx1-ubyte[.gz]``; train and t10k files are concatenated);
    * a directory with CIFAR-10 python batches (``data_batch_*`` and/or ``test_batch``);
    * an ``.npz`` file with ``images`` and ``labels`` (or ``x`` and ``y``) arrays; integer images must
      hold 0-255 pixels and are scaled to [0, 1], float images must already be in [0, 1]; a missing
      channel axis is added.
    """
    path = os.fspath(path)
    if os.path.isfile(path) and path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            for image_key, label_key in (("images", "labels"), ("x", "y")):
                if image_key in data and label_key in data:
                    images, labels = data[image_key], data[label_key]
                    break
            else:
                raise ValueError(f"`path` must be an .npz with 'images' and 'labels' (or 'x' and 'y') arrays, "
                                 f"got keys {sorted(data.keys())} in {path!r}.")
        return _npz_images(images, path), _npz_labels(labels, images.shape[0], path)
    if not os.path.isdir(path):
        raise ValueError(f"`path` must be a directory of IDX / CIFAR-10 files or an .npz file, got {path!r}.")
    names = sorted(os.listdir(path))
    image_files = [n for n in names if "images-idx3-ubyte" in n]
    if image_files:
        parts = []
        for name in image_files:
            label_name = name.replace("images-idx3-ubyte", "labels-idx1-ubyte")
            if label_name not in names:
                raise ValueError(f"`path` holds {name!r} but not its labels {label_name!r}: {path!r}.")
            parts.append(load_mnist_idx(os.path.join(path, name), os.path.join(path, label_name)))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    batches = [n for n in names if n.startswith("data_batch_") or n == "test_batch"]
    if batches:
        return load_cifar10_batches(path, batches)
    raise ValueError(f"`path` holds neither MNIST IDX files (*images-idx3-ubyte*) nor CIFAR-10 python batches "
                     f"(data_batch_*, test_batch): {path!r}.")


def load_feature_files(train: str | os.PathLike, query: str | os.PathLike, database: str | os.PathLike | None = None,
                       *, max_items: int | None = None) -> tuple:
    """Train / query (/ database) feature files for the ANN protocol, memory-mapped, with their dimensions
    checked against each other. Returns ``(train, query, database)``; database defaults to train.
    """
    parts = {"train": train, "query": query, "database": database if database is not None else train}
    arrays = {}
    for name, path in parts.items():
        array = read_features(path, max_items=max_items if name != "query" else None)
        if array.ndim != 2:
            raise ValueError(f"`{name}` file must hold vectors [n, d], got shape {array.shape}: {path!r}.")
        arrays[name] = array
    dims = {name: a.shape[1] for name, a in arrays.items()}
    if len(set(dims.values())) > 1:
        raise ValueError(f"feature files must have the same dimension, got {dims} "
                         f"(train {parts['train']!r}, query {parts['query']!r}, database {parts['database']!r}).")
    return arrays["train"], arrays["query"], arrays["database"]


def make_gaussian_mixture(n: int = 100_000, dim: int = 256, components: int = 100, *, intrinsic_dim: int = 16,
                          spread: float = 1.5, noise: float = 0.5, seed: int = 0) -> tuple:
    """Synthetic feature vectors with neighbourhood structure, for ANN benchmarks: a mixture of
    ``components`` Gaussians with means N(0, I) and low-rank covariances (``intrinsic_dim`` random
    directions each, spread ``spread`` times the typical distance of a mean from the origin), plus
    isotropic noise of standard deviation ``noise`` per feature.

    Returns float32 ``[n, dim]`` and the int64 component of each point.
    """
    n = _validation.check_positive_int(n, "n")
    dim = _validation.check_positive_int(dim, "dim")
    components = _validation.check_positive_int(components, "components")
    intrinsic_dim = _validation.check_positive_int(intrinsic_dim, "intrinsic_dim")
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(components, dim))
    bases = rng.normal(0.0, spread / np.sqrt(intrinsic_dim), size=(components, intrinsic_dim, dim))
    labels = rng.integers(0, components, size=n)
    x = np.empty((n, dim), np.float32)
    for start in range(0, n, 16384):
        part = labels[start:start + 16384]
        latent = rng.normal(size=(part.size, intrinsic_dim))
        x[start:start + part.size] = (means[part] + np.einsum("nk,nkd->nd", latent, bases[part])
                                      + noise * rng.normal(size=(part.size, dim)))
    return x, labels.astype(np.int64)


def known_datasets() -> list:
    return list(BUNDLED_DATASETS) + sorted(TFDS_DATASETS)


def load(name: str | os.PathLike = "digits", *, data_dir: str | os.PathLike | None = None, download: bool = True,
         tfds_split: str | None = None, **protocol: str) -> RetrievalSplit:
    """A :class:`RetrievalSplit` of a named data set, split by :func:`make_split` (``protocol`` args).

    Known names: ``"digits"`` (bundled with scikit-learn, offline) and the TFDS image sets in
    ``TFDS_DATASETS``; any other TFDS name is tried with ``split=tfds_split`` (default ``"train"``).
    A path to a directory or ``.npz`` file is read with :func:`load_local`.
    """
    if not isinstance(name, (str, os.PathLike)) or not name:
        raise ValueError(f"`name` must be a data set name, one of {known_datasets()}, got {name!r}.")
    name = os.fspath(name)
    if name == "digits":
        x, y = load_digits()
    elif os.path.exists(name):
        x, y = load_local(name)
    elif name in TFDS_DATASETS or tfds_split is not None:
        x, y = load_tfds(name, data_dir=data_dir, download=download, split=tfds_split)
    else:
        raise ValueError(f"`name` must be one of the known data sets {known_datasets()} (or a TFDS name "
                         f"with `tfds_split`), got {name!r}.")
    return make_split(x, y, name=name, **protocol)
