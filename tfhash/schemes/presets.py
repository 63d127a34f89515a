"""Presets: named settings of a scheme (hyperparameters *and* training schedule), defined once on its class.

A :class:`Preset` holds constructor arguments, epochs and batch size, optionally different per code
length (``per_bits``). Every scheme has a ``paper`` preset that reproduces its paper's settings, and names
its default (``HashingScheme.default_preset``). ``tfhash.fit(scheme, x, preset=...)`` and
``python -m trainers.train --preset=...`` resolve presets here, so both train the same settings;
explicit arguments override preset values. A JSON file with the same keys is a user-defined preset.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from tfhash import _validation

TRAINING_KEYS = ("epochs", "batch_size")
FILE_KEYS = ("description", "selected_on", "epochs", "batch_size", "training_items", "hyperparameters", "per_bits")


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named setting of a scheme.

    Attributes:
        description: where the values come from (the paper's section, or what they change and why).
        hyperparameters: constructor arguments of the scheme; those not named keep the constructor's
            defaults (the paper's values).
        epochs, batch_size: the training schedule.
        per_bits: ``{bits: {key: value}}`` overriding hyperparameters, ``epochs`` or ``batch_size`` at
            that code length.
        selected_on: which data and which split chose the values ("paper" for a paper's settings).
        training_items: the training set size the epochs were chosen at, or None. A larger training set then
            trains proportionally fewer epochs (at least one), so the number of steps stays the validated
            one; a smaller set keeps the epochs. None: the epochs hold at any size (the papers' settings).
    """

    description: str
    hyperparameters: dict = dataclasses.field(default_factory=dict)
    epochs: int = 50
    batch_size: int = 100
    per_bits: dict = dataclasses.field(default_factory=dict)
    selected_on: str = "paper"
    name: str = ""
    training_items: int | None = None

    def settings(self, bits: int) -> dict:
        """``{"epochs", "batch_size", "hyperparameters"}`` at code length ``bits``."""
        hyperparameters = dict(self.hyperparameters)
        training = {"epochs": self.epochs, "batch_size": self.batch_size}
        for key, value in self.per_bits.get(int(bits), {}).items():
            (training if key in TRAINING_KEYS else hyperparameters)[key] = value
        return {**training, "hyperparameters": hyperparameters}

    def epochs_for(self, epochs: int, count: int | None) -> int:
        """The epochs to train ``count`` items for, given the preset's ``epochs`` (see ``training_items``)."""
        if self.training_items is None or count <= self.training_items:
            return epochs
        return max(1, round(epochs * self.training_items / count))

    def check(self, scheme_cls: type, origin: str) -> Preset:
        """Raises ``ValueError`` for hyperparameters the scheme does not have, or a bad schedule."""
        _validation.check_positive_int(self.epochs, f"epochs of {origin}")
        _validation.check_positive_int(self.batch_size, f"batch_size of {origin}")
        if self.training_items is not None:
            _validation.check_positive_int(self.training_items, f"training_items of {origin}")
        scheme_cls.check_values(self.hyperparameters, origin=origin, names_only=True)
        for bits, values in sorted(self.per_bits.items()):
            scheme_cls.check_values(values, origin=f"{origin} at {bits} bits", names_only=True, extra=TRAINING_KEYS)
        return self


def read_preset_file(path: str | os.PathLike, scheme_cls: type) -> Preset:
    """A user-defined preset from a JSON object with the keys of ``FILE_KEYS`` (all optional)."""
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"`preset` file {path!r} is not readable JSON: {err}") from err
    if not isinstance(values, dict):
        raise ValueError(f"`preset` file {path!r} must hold a JSON object, got {type(values).__name__}.")
    unknown = sorted(set(values) - set(FILE_KEYS))
    if unknown:
        raise ValueError(f"`preset` file {path!r} has unknown keys {unknown}; known: {list(FILE_KEYS)}.")
    for key in ("hyperparameters", "per_bits"):
        if not isinstance(values.get(key, {}), dict):
            raise ValueError(f"`preset` file {path!r}: {key!r} must be a JSON object ({{\"name\": value, ...}}), "
                             f"got {type(values[key]).__name__} {values[key]!r}.")
    per_bits = values.get("per_bits", {})
    try:
        per_bits = {int(bits): dict(v) for bits, v in per_bits.items()}
    except (TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"`per_bits` in {path!r} must map code lengths to objects, got {per_bits!r}.") from err
    base = scheme_cls.presets["paper"]
    preset = Preset(description=values.get("description", f"user preset {path}"),
                    hyperparameters=dict(values.get("hyperparameters", {})),
                    epochs=values.get("epochs", base.epochs), batch_size=values.get("batch_size", base.batch_size),
                    per_bits=per_bits, selected_on=values.get("selected_on", "user"), name=os.fspath(path),
                    training_items=values.get("training_items"))
    return preset.check(scheme_cls, f"`preset` file {path!r}")


def resolve(scheme_cls: type, preset: Any = None) -> Preset:
    """The :class:`Preset` meant by ``preset``: ``None`` (the scheme's default), a name of the scheme's
    presets, a path to a JSON file, or a ``Preset``."""
    if preset is None:
        preset = scheme_cls.default_preset
    if isinstance(preset, Preset):
        return preset.check(scheme_cls, f"preset {preset.name!r}")
    if isinstance(preset, (str, os.PathLike)):
        name = os.fspath(preset)
        if name in scheme_cls.presets:
            return scheme_cls.presets[name]
        if name.endswith(".json") or os.path.isfile(name):
            if not os.path.isfile(name):
                raise ValueError(f"`preset` file {name!r} does not exist.")
            return read_preset_file(name, scheme_cls)
    raise ValueError(f"`preset` must be one of the {scheme_cls.key!r} presets {sorted(scheme_cls.presets)} "
                     f"or a JSON file, got {preset!r}.")


def named(**presets: Preset) -> dict:
    """``{name: Preset}`` with each preset's ``name`` set to its key (for a scheme's ``presets``)."""
    return {name: dataclasses.replace(preset, name=name) for name, preset in presets.items()}
