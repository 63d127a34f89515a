"""Registry of hashing schemes: one file per scheme, registered under its file name.

Adding a scheme = a new module here that decorates its class with ``@register("key")`` and one
import line at the bottom of this file (the registry itself is
``tfhash.schemes.registry``). Everything else (``tfhash.fit``, the trainer, the export, the
benchmarks, the shared tests) reads the scheme's facts from its class.
"""

from tfhash.schemes import (
    bgan,  # noqa: F401  (registers "bgan")
    cibhash,  # noqa: F401  (registers "cibhash")
    dshgan,  # noqa: F401  (registers "dshgan")
    greedyhash,  # noqa: F401  (registers "greedyhash")
    hashgan,  # noqa: F401  (registers "hashgan")
    sigah,  # noqa: F401  (registers "sigah")
)
from tfhash.schemes.registry import get, names, register  # noqa: F401 - the package's public names
