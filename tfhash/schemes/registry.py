"""The registry of hashing schemes: each scheme class registers itself under a key."""

from __future__ import annotations

from collections.abc import Callable

from tfhash.schemes.base import HashingScheme

_REGISTRY = {}


def register(key: str) -> Callable[[type], type]:
    """Class decorator: makes a :class:`~tfhash.schemes.base.HashingScheme` available as ``key``."""
    def decorator(cls):
        if key in _REGISTRY:
            raise ValueError(f"scheme key {key!r} is already registered by {_REGISTRY[key].__name__}")
        cls.key = key
        _REGISTRY[key] = cls
        return cls
    return decorator


def names() -> list:
    """Registered scheme keys, sorted."""
    return sorted(_REGISTRY)


def get(name: str | type) -> type:
    """The scheme class registered as ``name`` (case-insensitive); a scheme class is returned as it is."""
    if isinstance(name, type) and issubclass(name, HashingScheme):
        return name
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ValueError(f"`scheme` must be one of the registered schemes {names()}, got {name!r}.")
    return _REGISTRY[key]
