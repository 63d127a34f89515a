"""TensorBoard logging for training a scheme: loss terms, learning rates, bit statistics, samples, mAP.

:class:`TensorBoardLogger` is a Keras callback for ``tfhash.fit(..., callbacks=[...])``; it writes, per
epoch (step = epochs completed):

* ``loss/<term>``: every term the scheme logs (epoch means; ``bit_*`` statistics go to ``bits/batch_*``);
* ``learning_rate/<player>``: each optimizer's current learning rate;
* ``bits/frequency`` (histogram), ``bits/frequency_min``, ``bits/frequency_max``: how often each bit
  is 1 on a fixed sample of training items;
* ``samples/generated``: a grid of generated images from fixed noise (schemes with a generator of images);
* ``eval/mAP``: retrieval mAP on a split's queries and database, every ``eval_every`` epochs and at the end.

:func:`write_precision_recall_image` draws precision-recall curves (e.g. from
``evaluate_codes(..., pr_curve=True)``) into ``eval/precision_recall``. :class:`RunRecord` keeps a
JSON record of training time and evaluations that survives an interrupted, resumed run.
"""

from __future__ import annotations

import io
import json
import os
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from tfhash import _io, _validation, codes, metrics


def image_grid(images: ArrayLike, columns: int = 8, min_size: int = 32) -> np.ndarray:
    """Tiles ``[n, h, w, c]`` images in [0, 1] into one image (1-pixel gaps); images smaller than
    ``min_size`` pixels are enlarged by repeating pixels so that the grid stays legible.
    """
    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"`images` must be [n, height, width(, channels)], got shape {images.shape}.")
    factor = max(1, -(-min_size // max(images.shape[1], images.shape[2])))
    images = images.repeat(factor, axis=1).repeat(factor, axis=2)
    n, height, width, channels = images.shape
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    grid = np.ones((rows * (height + 1) - 1, columns * (width + 1) - 1, channels), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * (height + 1):r * (height + 1) + height, c * (width + 1):c * (width + 1) + width] = image
    return grid


def _figure_to_image(figure):
    """RGB uint8 ``[h, w, 3]`` of a matplotlib figure."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return tf.image.decode_png(buffer.getvalue(), channels=3).numpy()


def precision_recall_figure(curves: dict, title: str = "precision-recall (Hamming radius 0..bits)") -> Any:
    """A matplotlib figure of ``{name: (precision, recall)}`` curves (a plain ``Figure``: no pyplot state,
    no backend change)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 4))
    axes = figure.add_subplot()
    for name, (precision, recall) in curves.items():
        axes.plot(recall, precision, marker=".", label=name)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    figure.tight_layout()
    return figure


def write_precision_recall_image(log_dir: str | os.PathLike, curves: dict, step: int) -> None:
    """Writes ``{name: (precision, recall)}`` curves as the image ``eval/precision_recall`` at ``step``."""
    if not curves:
        raise ValueError("`curves` must hold at least one {name: (precision, recall)} entry, got none.")
    image = _figure_to_image(precision_recall_figure(curves))
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        tf.summary.image("eval/precision_recall", image[None], step=int(step))
    writer.flush()
    writer.close()


class TensorBoardLogger(keras.callbacks.Callback):
    """Per-epoch TensorBoard summaries of a hashing scheme's training (see the module docstring).

    Args:
        log_dir: directory of the event files.
        sample_x: training items whose codes give the bit-frequency histogram (up to ``sample_size``
            of them, fixed for the whole run).
        split: a ``RetrievalSplit`` for ``eval/mAP`` (``None``: no retrieval evaluation).
        eval_every: evaluate mAP every this many epochs (and at the last epoch); 0 turns it off.
        sample_images: how many generated images the grid shows (schemes that generate images).
        seed: the fixed noise of the generated grid.
        log: called with a line of text at each evaluation (e.g. ``print``); ``None``: quiet.
    """

    def __init__(self, log_dir, sample_x=None, split=None, eval_every=5, sample_images=64, sample_size=1000,
                 seed=0, log=None):
        super().__init__()
        self.log_dir = str(log_dir)
        self.sample_x = None if sample_x is None else np.asarray(sample_x)[:sample_size]
        self.split = split
        self.eval_every = int(eval_every)
        if self.eval_every < 0:
            raise ValueError(f"`eval_every` must be >= 0 (0 = never), got {eval_every!r}.")
        self.sample_images = _validation.check_positive_int(sample_images, "sample_images")
        self.seed = int(seed)
        self.log = log
        self.writer = None
        self.evaluations = []  # (epoch, mAP), also useful without TensorBoard

    def _writer(self):
        if self.writer is None:
            self.writer = tf.summary.create_file_writer(self.log_dir)
        return self.writer

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._epochs = self.params.get("epochs") if self.params else None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        step = epoch + 1
        model = self.model
        with self._writer().as_default():
            for name, value in (logs or {}).items():
                # Batch bit statistics the scheme logs go with the other bit figures, the rest are loss terms.
                tag = f"bits/batch_{name[4:]}" if name.startswith("bit_") else f"loss/{name}"
                tf.summary.scalar(tag, float(np.mean(np.asarray(value))), step=step)
            for player, optimizer in getattr(model, "scheme_optimizers", {}).items():
                tf.summary.scalar(f"learning_rate/{player}", float(np.asarray(optimizer.learning_rate)), step=step)
            if self.sample_x is not None and len(self.sample_x):
                bits = codes.unpack(model.encode(self.sample_x), model.bits)
                frequency = bits.mean(axis=0)
                tf.summary.histogram("bits/frequency", frequency, step=step)
                tf.summary.scalar("bits/frequency_min", float(frequency.min()), step=step)
                tf.summary.scalar("bits/frequency_max", float(frequency.max()), step=step)
            images = model.sample_images(self.sample_images, seed=self.seed)
            if images is not None:
                tf.summary.image("samples/generated", image_grid(images, columns=model.sample_columns)[None], step=step)
            last = self._epochs is not None and step == self._epochs
            if self.split is not None and self.eval_every and (step % self.eval_every == 0 or last):
                split = self.split
                value = metrics.mean_average_precision(model.encode(split.query_x), model.encode(split.database_x),
                                                       split.query_y, split.database_y)
                self.evaluations.append((step, value))
                tf.summary.scalar("eval/mAP", value, step=step)
                if self.log:
                    self.log(f"epoch {step}: retrieval mAP {value:.4f}")
        self.writer.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class RunRecord(keras.callbacks.Callback):
    """Keeps ``path`` (JSON) current after each epoch: training seconds so far and the evaluations of a
    :class:`TensorBoardLogger`, so a run resumed from a checkpoint reports the whole run, not its last part.

    Entries after the epoch a run resumes from (an epoch trained after the last checkpoint) are dropped.
    """

    def __init__(self, path, logger=None):
        super().__init__()
        self.path = str(path)
        self.logger = logger
        self.epochs = []  # [{"epoch", "train_seconds"}]
        self.evaluations = []  # [{"epoch", "mAP"}]
        if os.path.isfile(self.path):
            try:
                with open(self.path, encoding="utf-8") as f:
                    saved = json.load(f)
                self.epochs, self.evaluations = list(saved["epochs"]), list(saved["evaluations"])
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{self.path} is not a run record ({err}); move it away to start a new one.") from err
        self._resumed_at = None

    @property
    def train_seconds(self) -> float:
        return self.epochs[-1]["train_seconds"] if self.epochs else 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._resumed_at is None:  # the first epoch of this run: forget what came after the checkpoint
            self._resumed_at = epoch
            self.epochs = [e for e in self.epochs if e["epoch"] <= epoch]
            self.evaluations = [e for e in self.evaluations if e["epoch"] <= epoch]
            self._known = len(self.logger.evaluations) if self.logger is not None else 0
        self._base, self._start = self.train_seconds, time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs.append({"epoch": epoch + 1, "train_seconds": self._base + time.perf_counter() - self._start})
        if self.logger is not None:
            self.evaluations += [{"epoch": e, "mAP": m} for e, m in self.logger.evaluations[self._known:]]
            self._known = len(self.logger.evaluations)
        _io.write_json_atomically(self.path, {"epochs": self.epochs, "evaluations": self.evaluations})
