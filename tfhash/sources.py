"""Collections read in batches, for encoding more items than fit in memory (:func:`tfhash.index.build`).

A source yields ``(positions, items)`` batches from any starting position, in a fixed order, so an
interrupted build resumes where it stopped: ``positions`` are the items' places in the source (the ids
of the index). Items that cannot be decoded are left out of the batches and named by :meth:`Source.name`
and :meth:`Source.error`, so the caller reports them.

- :class:`ArraySource`: an array in memory or a memory-mapped ``.npy`` / ``.fvecs`` / ``.bvecs`` / ``.ivecs``
  file (:func:`tfhash.datasets.read_features`).
- :class:`ImageFolderSource`: image files (JPEG, PNG, BMP, GIF) below a folder, in sorted order; the
  first-level sub-folder of an image is its label.
- :class:`TFRecordSource`: ``tf.train.Example`` records with an encoded image feature.
- :class:`TFDSSource`: a split of a TensorFlow Datasets set, prepared in ``data_dir``.

:func:`open_source` picks one from what the user has: an array, a path or a ``tfds:NAME[:SPLIT]`` name.
"""

from __future__ import annotations

import glob
import mmap
import os
import re
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf
import xxhash
from numpy.typing import ArrayLike

from tfhash import _validation, datasets

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
OTHER_KINDS = (".npy", ".npz", ".fvecs", ".bvecs", ".ivecs", ".json", ".txt", ".csv")
RELEASE_BYTES = 64 << 20  # memory-mapped pages read are let go after about this much


class Source:
    """A collection of ``count`` items of shape ``item_shape``, read in batches from any position."""

    count: int
    item_shape: tuple
    named = False  # whether items have names worth keeping in an index (files, records)

    def describe(self) -> dict:
        """What identifies the collection (a resumed build refuses another one)."""
        raise NotImplementedError

    def batches(self, start: int, batch_size: int) -> Iterator[tuple]:
        """Yields ``(positions int64 [b], items [b, *item_shape])`` from position ``start`` on."""
        raise NotImplementedError

    def name(self, position: int) -> str:
        """How to name the item at ``position`` in a report (and, for a named source, in the index)."""
        return f"item {position}"

    def listing(self) -> list | None:
        """Every item's name in order, for a source whose listing can change between two builds (else None)."""
        return None

    def error(self, position: int) -> str:
        """Why the item at ``position`` was left out (it is read again to say so)."""
        return "could not be read"


class ArraySource(Source):
    """Rows of an array (or a memory-mapped file, read a batch at a time)."""

    def __init__(self, array, item_shape=None, origin=None):
        self.array = array
        self.count = int(array.shape[0])
        self.item_shape = tuple(array.shape[1:])
        self.origin = origin
        if item_shape is not None and tuple(item_shape) != self.item_shape:
            what = origin or "the array"
            raise ValueError(f"`source` ({what}) holds items of shape {self.item_shape}; the encoder takes "
                             f"{tuple(item_shape)}.")

    def describe(self) -> dict:
        return {"kind": "array", "origin": self.origin, "count": self.count, "item_shape": list(self.item_shape),
                "dtype": str(self.array.dtype)}

    def batches(self, start: int, batch_size: int) -> Iterator[tuple]:
        mapping, since_release = _file_mapping(self.array), 0
        for begin in range(start, self.count, batch_size):
            stop = min(begin + batch_size, self.count)
            items = np.array(self.array[begin:stop])  # a copy: the mapped pages can be let go
            yield np.arange(begin, stop, dtype=np.int64), items
            since_release += items.nbytes
            if mapping is not None and since_release >= RELEASE_BYTES:
                # Pages of a memory-mapped file that were read count in the process's resident memory until
                # the kernel needs them back; a stream reads each once, so drop them (they are re-read from
                # the file if touched again): memory stays flat whatever the file's size.
                _release(mapping)
                since_release = 0


def _release(mapping):
    mapping.madvise(mmap.MADV_DONTNEED)


def _file_mapping(array):
    """The ``mmap`` under a memory-mapped array (or a view of one) where pages can be released, else None."""
    if not hasattr(mmap, "MADV_DONTNEED"):
        return None
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return base


def decode_image(encoded: bytes, item_shape: tuple) -> np.ndarray:
    """An encoded image (JPEG, PNG, BMP, GIF bytes) as float32 ``item_shape`` ``[h, w, c]`` in [0, 1]: decoded
    with ``c`` channels and resized with antialiasing."""
    height, width, channels = item_shape
    image = tf.io.decode_image(encoded, channels=channels, expand_animations=False, dtype=tf.float32)
    image = tf.image.resize(image, (height, width), antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)


def read_image(path: str | os.PathLike, item_shape: tuple) -> np.ndarray:
    """One image file as :func:`decode_image` gives it, with a leading batch axis."""
    return decode_image(tf.io.read_file(os.fspath(path)), item_shape).numpy()[None]


class _DecodedSource(Source):
    """Encoded images decoded and resized in a tf.data pipeline; undecodable ones are left out."""

    named = True

    def __init__(self, item_shape):
        if len(item_shape) != 3 or item_shape[-1] not in (1, 3):
            raise ValueError(f"image sources need an encoder of images [height, width, 1 or 3], got item shape "
                             f"{tuple(item_shape)}.")
        self.item_shape = tuple(int(d) for d in item_shape)

    def _encoded(self, start):
        """A dataset of ``(position, encoded bytes)`` from ``start`` on."""
        raise NotImplementedError

    def _decode(self, encoded):
        return decode_image(encoded, self.item_shape)

    def batches(self, start, batch_size):
        data = self._encoded(start).map(lambda position, encoded: (position, self._decode(encoded)),
                                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        # A file that fails to decode is dropped here; its position is missing from the batches, and the
        # build names it (Source.name / Source.error).
        data = data.ignore_errors().batch(batch_size).prefetch(2)
        for positions, items in data.as_numpy_iterator():
            yield positions.astype(np.int64), items

    def _encoded_at(self, position):
        raise NotImplementedError

    def error(self, position):
        try:
            self._decode(self._encoded_at(position))
        except tf.errors.OpError as err:
            # The op's message without TensorFlow's node and op decorations.
            return re.sub(r"\{\{[^}]*\}\}|\s*\[Op:\w+\].*$", "", err.message).strip()
        except Exception as err:  # noqa: BLE001 - report whatever the decoder said
            return _validation.error_summary(err)
        return "could not be read"


def list_image_files(directory: str | os.PathLike) -> list:
    """The image files below ``directory``, as sorted relative paths with ``/`` separators: the one listing rule
    of the local build, Beam and training from a folder, so an id is the same file everywhere.

    A file counts when its extension is one of ``IMAGE_EXTENSIONS`` in any case (``.JPG`` too). Hidden files
    and folders (names starting with ``.``) are left out. A symbolic link to a file is listed like the file;
    a symbolic link to a folder is not followed (no loops, no second copy of a tree).
    """
    directory = os.fspath(directory)
    files = []
    for root, dirs, names in os.walk(directory):  # os.walk does not descend into linked folders
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        relative = os.path.relpath(root, directory)
        files += [name if relative == "." else f"{relative}/{name}" for name in names
                  if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
                  and os.path.isfile(os.path.join(root, name))]
    return sorted(file.replace(os.sep, "/") for file in files)


class ImageFolderSource(_DecodedSource):
    """Every image file below ``directory`` (by :func:`list_image_files`); labels from first-level sub-folders.
    An item's name is its path relative to ``directory``."""

    def __init__(self, directory, item_shape, files=None):
        super().__init__(item_shape)
        self.directory = os.fspath(directory)
        self.files = list_image_files(self.directory) if files is None else list(files)
        if not self.files:
            raise ValueError(f"`source` {self.directory!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)}).")
        self.count = len(self.files)
        parts = [f.split("/") for f in self.files]
        self.class_names = sorted({p[0] for p in parts}) if all(len(p) > 1 for p in parts) else None

    @property
    def labels(self) -> np.ndarray:
        """Class index of each file (its first-level sub-folder, sorted by name), or ``None``."""
        if self.class_names is None:
            return None
        index = {name: i for i, name in enumerate(self.class_names)}
        return np.array([index[f.split("/")[0]] for f in self.files], np.int64)

    def describe(self) -> dict:
        digest = xxhash.xxh3_128("\n".join(self.files).encode("utf-8")).hexdigest()
        return {"kind": "image_folder", "directory": os.path.abspath(self.directory), "count": self.count,
                "first": self.files[0], "last": self.files[-1], "listing": digest, "item_shape": list(self.item_shape)}

    def listing(self) -> list:
        return self.files

    def subset(self, positions: ArrayLike) -> ImageFolderSource:
        """The source of the files at ``positions`` only (their names unchanged)."""
        return ImageFolderSource(self.directory, self.item_shape, [self.files[int(p)] for p in positions])

    def _encoded(self, start):
        paths = [os.path.join(self.directory, f) for f in self.files[start:]]
        data = tf.data.Dataset.from_tensor_slices((np.arange(start, self.count, dtype=np.int64), paths))
        return data.map(lambda position, path: (position, tf.io.read_file(path)))

    def _encoded_at(self, position):
        return tf.io.read_file(os.path.join(self.directory, self.files[position]))

    def name(self, position: int) -> str:
        return self.files[position]


class TFRecordSource(_DecodedSource):
    """``tf.train.Example`` records (files in sorted order), the encoded image in ``image_feature``."""

    def __init__(self, files, item_shape, image_feature="image"):
        super().__init__(item_shape)
        if isinstance(files, (str, os.PathLike)):
            pattern = os.fspath(files)
            files = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        self.files = [os.fspath(f) for f in files]
        missing = [f for f in self.files if not os.path.isfile(f)]
        if not self.files or missing:
            raise ValueError(f"`source` must name TFRecord files, got {missing or files!r} (not found).")
        self.image_feature = str(image_feature)
        # Counted once up front (raw records, nothing decoded): the progress bar's total and the end that
        # tells a left-out last record from the end of the data.
        counts = []
        for file in self.files:
            try:
                counts.append(int(tf.data.TFRecordDataset([file]).reduce(np.int64(0), lambda n, _: n + 1)))
            except tf.errors.OpError as err:
                raise ValueError(f"`source` {file!r} is a truncated or damaged TFRecord file: "
                                 f"{_validation.error_summary(err.message)}") from None
        self._firsts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.count = int(self._firsts[-1])

    def describe(self) -> dict:
        return {"kind": "tfrecord", "files": [os.path.abspath(f) for f in self.files], "count": self.count,
                "image_feature": self.image_feature, "item_shape": list(self.item_shape)}

    def _image_bytes(self, record):
        feature = {self.image_feature: tf.io.FixedLenFeature([], tf.string)}
        return tf.io.parse_single_example(record, feature)[self.image_feature]

    def _encoded(self, start):
        records = tf.data.TFRecordDataset(self.files).enumerate().skip(start)
        return records.map(lambda position, record: (position, self._image_bytes(record)))

    def _encoded_at(self, position):
        record = next(iter(tf.data.TFRecordDataset(self.files).skip(position).take(1)))
        return self._image_bytes(record)

    def name(self, position: int) -> str:
        """``FILE:N``: record N (from 0) of the TFRecord file FILE."""
        file = int(np.searchsorted(self._firsts, position, side="right")) - 1
        return f"{os.path.basename(self.files[file])}:{position - int(self._firsts[file])}"


class TFDSSource(_DecodedSource):
    """A prepared TensorFlow Datasets split (``data_dir``), its ``image`` feature; nothing is downloaded."""

    def __init__(self, name, item_shape, split="train", data_dir=None, image_feature="image"):
        super().__init__(item_shape)
        import tensorflow_datasets as tfds

        self.dataset_name, self.split, self.data_dir = str(name), str(split), data_dir
        self.image_feature = str(image_feature)
        try:
            self._builder = tfds.builder(self.dataset_name, data_dir=data_dir)
            splits = self._builder.info.splits
            if splits and self.split in splits:
                self.count = int(splits[self.split].num_examples)
            else:  # a split the metadata does not size: count its records once (nothing is decoded)
                self.count = int(self._images().reduce(np.int64(0), lambda n, _: n + 1))
        except Exception as err:  # tfds raises several types for unknown names and splits
            raise ValueError(f"`source` tfds:{self.dataset_name}:{self.split} cannot be opened in data_dir "
                             f"{data_dir!r}: {_validation.error_summary(err)}") from err

    def describe(self) -> dict:
        return {"kind": "tfds", "name": self.dataset_name, "split": self.split, "count": self.count,
                "item_shape": list(self.item_shape)}

    def _images(self):
        import tensorflow_datasets as tfds

        data = self._builder.as_dataset(split=self.split, shuffle_files=False,
                                        decoders={self.image_feature: tfds.decode.SkipDecoding()})
        return data.map(lambda example: example[self.image_feature])

    def _encoded(self, start):
        return self._images().enumerate().skip(start)

    def _encoded_at(self, position):
        return next(iter(self._images().skip(position).take(1)))

    def name(self, position: int) -> str:
        return f"tfds:{self.dataset_name}:{self.split}[{position}]"


IMAGE_FOLDER_SIZE = (224, 224)  # a phone photo after the usual resize


def image_folder(directory: str | os.PathLike, *, image_size: tuple = IMAGE_FOLDER_SIZE, channels: int = 3,
                 labels: str | None = "inferred", batch_size: int = 32, shuffle: bool = True, seed: int = 0,
                 drop_remainder: bool = False) -> tf.data.Dataset:
    """A batched ``tf.data.Dataset`` of the image files below ``directory`` (the listing rule of
    :func:`list_image_files`), decoded and resized to ``image_size`` as uint8 pixels ``[b, h, w, channels]``,
    read from disk as it goes, never held in memory whole.

    Every file is decoded once first: those that cannot be are warned about by name and left out (training then
    never stops on them). ``labels="inferred"``: elements are ``(images, labels)``, a file's label the index of
    its first-level sub-folder (sorted by name, ``dataset.class_names``); ``None``: images only. ``shuffle``
    reshuffles the files every epoch from ``seed``.
    """
    height, width = (_validation.check_positive_int(side, "image_size") for side in image_size)
    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 or 3, got {channels!r}.")
    _validation.check_choice(labels, "labels", ("inferred", None))
    batch_size = _validation.check_positive_int(batch_size, "batch_size")
    source = ImageFolderSource(directory, (height, width, channels))
    if labels == "inferred" and source.class_names is None:
        raise ValueError(f"`labels`='inferred' needs every image of `directory` {source.directory!r} in a "
                         "sub-folder named by its class; pass labels=None for unlabelled images.")
    decodable = np.concatenate([positions for positions, _ in source.batches(0, 256)] or [np.empty(0, np.int64)])
    for position in sorted(set(range(source.count)) - set(decodable.tolist())):
        warnings.warn(f"skipped {source.files[position]}: {source.error(position)}", stacklevel=2)
    if not decodable.size:
        raise ValueError(f"`directory` {source.directory!r} holds no image file that can be decoded.")
    paths = np.array([os.path.join(source.directory, source.files[p]) for p in decodable])
    parts = (paths,) if labels is None else (paths, source.labels[decodable])
    data = tf.data.Dataset.from_tensor_slices(parts)
    if shuffle:
        data = data.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    def load(path, *label):
        image = decode_image(tf.io.read_file(path), (height, width, channels))
        pixels = tf.cast(tf.round(image * 255.0), tf.uint8)
        return (pixels, *label) if label else pixels

    # A file removed or damaged after the check above is left out of its batch rather than ending a long run.
    data = data.map(load, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    data = data.batch(batch_size, drop_remainder=drop_remainder)
    data = data.prefetch(tf.data.AUTOTUNE)
    data.class_names = source.class_names
    data.file_paths = paths.tolist()  # the decodable files, as Keras's image_dataset_from_directory names them
    return data


def open_source(source: Any, item_shape: tuple, *, data_dir: str | os.PathLike | None = None,
                image_feature: str = "image") -> Source:
    """The :class:`Source` for what a user has: an array (or :class:`Source`), a folder of images, a ``.npy``,
    ``.fvecs`` or ``.bvecs`` file, TFRecord files (``.tfrecord`` / ``.tfrecords``, a glob, or a list of
    files), or ``"tfds:NAME[:SPLIT]"`` (prepared in ``data_dir``)."""
    item_shape = tuple(int(d) for d in item_shape)
    if isinstance(source, Source):
        return source
    if isinstance(source, np.ndarray):
        return ArraySource(source, item_shape)
    if isinstance(source, (list, tuple)) and source and all(isinstance(s, (str, os.PathLike)) for s in source):
        return TFRecordSource(list(source), item_shape, image_feature)
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"`source` must be an array, a path or 'tfds:NAME[:SPLIT]', got {type(source).__name__}.")
    text = os.fspath(source)
    if text.startswith("tfds:"):
        name, _, split = text[len("tfds:"):].partition(":")
        return TFDSSource(name, item_shape, split or "train", data_dir, image_feature)
    if os.path.isdir(text):
        return ImageFolderSource(text, item_shape)
    lower = text.lower()
    if lower.endswith((".npy", ".fvecs", ".bvecs", ".ivecs")):
        array = datasets.read_features(text)  # memory-mapped
        if array.ndim == 2 and array.shape[1] == int(np.prod(item_shape)) and len(item_shape) > 1:
            array = array.reshape((array.shape[0],) + item_shape)  # flat vectors of an image encoder's items
        return ArraySource(array, item_shape, origin=os.path.abspath(text))
    if glob.has_magic(text):
        others = [m for m in sorted(glob.glob(text)) if m.lower().endswith(IMAGE_EXTENSIONS + OTHER_KINDS)]
        if others:
            raise ValueError(f"`source` {text!r} is a glob, which names TFRecord files, but it matches files of other "
                             f"kinds ({', '.join(os.path.basename(m) for m in others[:3])}); pass a folder of images, "
                             "a .npy file, or a glob of TFRecord files only.")
    if glob.has_magic(text) or lower.endswith((".tfrecord", ".tfrecords")) or ".tfrecord-" in lower:
        return TFRecordSource(text, item_shape, image_feature)
    if not os.path.exists(text):
        raise ValueError(f"`source` {text!r} does not exist.")
    raise ValueError(f"`source` {text!r} is not a folder of images, a .npy / .fvecs / .bvecs file or TFRecord "
                     "files; name TFRecord files *.tfrecord or pass a list of them.")
