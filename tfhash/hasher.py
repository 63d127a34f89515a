"""A trained scheme as users hold it: :class:`Hasher` encodes, evaluates against the shallow baselines, builds a
search index, saves / loads checkpoints that resume training and exports the encoder.

:class:`BaseHasher` is what every hasher offers on top of ``encode`` (the exported ones in
``tfhash.serving`` too).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from tfhash import checkpoints, datasets, evaluation
from tfhash import export as export_lib
from tfhash import index as index_lib
from tfhash.checkpoints import (  # noqa: F401 - their names here before tfhash.checkpoints held them
    CONFIG_FILE,
    check_run_directory,
    checkpoint_manager,
    read_description,
    restore,
)


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
              **options: Any) -> index_lib.HammingIndex | index_lib.FaissIndex:
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
    def bits(self) -> int:
        return self.model.bits

    @property
    def scheme(self) -> str:
        return self.model.key

    @property
    def fingerprint(self) -> str:
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
    def trained(self) -> bool:
        """True once any optimizer has taken a step."""
        return any(int(o.iterations.numpy()) > 0 for o in self.model.scheme_optimizers.values())

    def export(self, path: str | os.PathLike, *, overwrite: bool = False) -> str:
        """Writes a SavedModel of the encoder only (see :func:`tfhash.export.export_saved_model`)."""
        return export_lib.export_saved_model(self, path, overwrite=overwrite)

    def description(self) -> dict:
        """What the checkpoint directory's config file records: scheme, config, preset, schedule."""
        return {"scheme": self.model.key, "config": self.model.get_config(), "total_steps": self.model.total_steps,
                "preset": self.preset, "training": self.training}

    def save(self, directory: str | os.PathLike) -> str:
        """Writes the scheme's config and a checkpoint (model + optimizers) to ``directory``."""
        return checkpoints.save(self.model, self.epoch, self.description(), directory)

    @classmethod
    def load(cls, directory: str | os.PathLike, hyperparameters: dict | None = None) -> Hasher:
        """Rebuilds a hasher from a directory written by :meth:`save` or ``fit(checkpoint_dir=...)``.

        ``hyperparameters``: settings the config records only as a description (an array, a ``keras.Model``
        such as a user backbone), as they were given to ``tfhash.fit``.
        """
        description = checkpoints.read_description(directory)
        model, epoch = checkpoints.restore(directory, description, hyperparameters=hyperparameters)
        return cls(model, epoch=epoch, preset=description.get("preset"), training=description.get("training"))
