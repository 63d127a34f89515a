"""Declared hyperparameter rules: each scheme names the rule of every constructor argument once
(``HashingScheme.hyperparameter_rules``, in the spirit of scikit-learn's parameter constraints), and the
base class checks them in one place -- before the constructor builds anything, and in ``check_values``
before any data is read or any network is built.

A rule is a callable ``rule(value, name) -> value as stored`` that raises ``ValueError`` naming the argument,
what was expected and what arrived.
"""

from __future__ import annotations

import numbers
from typing import Any

import keras
import numpy as np

from tfhash import _validation


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


class NonNegative:
    """A finite number >= 0 (a loss weight, a learning rate, a noise level), stored as float."""

    def __call__(self, value, name):
        return _validation.check_non_negative_number(value, name)


class Positive:
    """A number > 0, stored as float."""

    def __call__(self, value, name):
        if not (_is_number(value) and value > 0):
            raise ValueError(f"`{name}` must be a positive number, got {value!r}.")
        return float(value)


class Fraction:
    """A number in [0, 1), stored as float."""

    def __call__(self, value, name):
        if not (_is_number(value) and 0 <= value < 1):
            raise ValueError(f"`{name}` must be in [0, 1), got {value!r}.")
        return float(value)


class Interval:
    """A number in [low, high), stored as float."""

    def __init__(self, low, high):
        self.low, self.high = low, high

    def __call__(self, value, name):
        if not (_is_number(value) and self.low <= value < self.high):
            raise ValueError(f"`{name}` must be a number in [{self.low:g}, {self.high:g}), got {value!r}.")
        return float(value)


class PositiveInt:
    """An integer >= ``minimum`` (1 by default), stored as int; ``why`` says what a larger minimum is for."""

    def __init__(self, minimum=1, why=None):
        self.minimum, self.why = minimum, why

    def __call__(self, value, name):
        value = _validation.check_positive_int(value, name)
        if value < self.minimum:
            raise ValueError(f"`{name}` must be at least {self.minimum} ({self.why}), got {value}.")
        return value


class Count:
    """An integer >= 0, stored as int; ``zero`` says what 0 means."""

    def __init__(self, zero=None):
        self.zero = zero

    def __call__(self, value, name):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 0:
            meaning = f" ({self.zero})" if self.zero else ""
            raise ValueError(f"`{name}` must be an integer >= 0{meaning}, got {value!r}.")
        return int(value)


class Integer:
    """Any integer value, stored as int (checked where it is used, e.g. by ``tfhash.augment.Policy``)."""

    def __call__(self, value, name):
        return int(value)


class Choice:
    """One of ``options``."""

    def __init__(self, options):
        self.options = tuple(options)

    def __call__(self, value, name):
        return _validation.check_choice(value, name, self.options)


class Flag:
    """True or False; ``strict`` refuses anything else, otherwise any value is read as a truth value."""

    def __init__(self, strict=False):
        self.strict = strict

    def __call__(self, value, name):
        if self.strict and not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"`{name}` must be True or False, got {value!r}.")
        return bool(value)


class PositiveInts:
    """A sequence of positive integers (layer widths), stored as a tuple."""

    def __call__(self, value, name):
        return tuple(_validation.check_positive_int(v, name) for v in value)


class PositiveNumbers:
    """A non-empty list of positive numbers, stored as a tuple of floats."""

    def __call__(self, value, name):
        values = list(value) if isinstance(value, (list, tuple)) else None
        if not values or not all(_is_number(v) and v > 0 for v in values):
            raise ValueError(f"`{name}` must be a non-empty list of positive numbers, got {value!r}.")
        return tuple(float(v) for v in values)


class Optional:
    """``None``, or a value that follows ``rule``."""

    def __init__(self, rule):
        self.rule = rule

    def __call__(self, value, name):
        return None if value is None else self.rule(value, name)


class Checked:
    """A value checked by ``check(value)`` (which raises or returns it), stored as given: a user's model, an
    array, or what a checkpoint recorded of them. ``describe(value)`` says how ``get_config`` records it."""

    def __init__(self, check, describe=None):
        self.check = check
        if describe is not None:
            self.describe = describe

    def __call__(self, value, name):
        self.check(value)
        return value


class Together:
    """A value checked together with others, by the scheme's ``check_combination``; stored as given."""

    def __call__(self, value, name):
        return value


def recorded(scheme_cls: type, name: str, value: Any) -> Any:
    """How ``get_config`` records the value of hyperparameter ``name`` of ``scheme_cls`` (JSON, comparable with a
    resumed run's settings): by its rule's ``describe`` when it has one; a ``keras.Model`` (e.g. a user's
    backbone) as ``"model NAME"``; tuples as lists."""
    describe = getattr(scheme_cls.hyperparameter_rules.get(name), "describe", None)
    if describe is not None:
        return describe(value)
    if isinstance(value, keras.Model):
        return f"model {value.name}"
    return list(value) if isinstance(value, tuple) else value
