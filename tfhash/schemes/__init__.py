"""Registry of hashing schemes: one file per scheme, registered under its file name.

Adding a scheme = a new module here that decorates its class with ``@register("key")`` and one
import line at the bottom of this file. Everything else (``tfhash.fit``, the trainer, the export, the
benchmarks, the shared tests) reads the scheme's facts from its class.
"""

_REGISTRY = {}


def register(key):
    """Class decorator: makes a :class:`~tfhash.schemes.base.HashingScheme` available as ``key``."""
    def decorator(cls):
        if key in _REGISTRY:
            raise ValueError(f"scheme key {key!r} is already registered by {_REGISTRY[key].__name__}")
        cls.key = key
        _REGISTRY[key] = cls
        return cls
    return decorator


def names():
    """Registered scheme keys, sorted."""
    return sorted(_REGISTRY)


def get(name):
    """The scheme class registered as ``name`` (case-insensitive); a scheme class is returned as it is."""
    from tfhash.schemes.base import HashingScheme

    if isinstance(name, type) and issubclass(name, HashingScheme):
        return name
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ValueError(f"`scheme` must be one of the registered schemes {names()}, got {name!r}.")
    return _REGISTRY[key]


from tfhash.schemes import (  # noqa: E402 - the registry above must exist before the schemes register
    bgan,  # noqa: F401  (registers "bgan")
    cibhash,  # noqa: F401  (registers "cibhash")
    dshgan,  # noqa: F401  (registers "dshgan")
    greedyhash,  # noqa: F401  (registers "greedyhash")
    hashgan,  # noqa: F401  (registers "hashgan")
    sigah,  # noqa: F401  (registers "sigah")
)
