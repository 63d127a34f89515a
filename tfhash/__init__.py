"""tfhash: adversarial learning to hash in TensorFlow/Keras.

Submodules: ``codes`` (the binary code convention), ``metrics`` (retrieval and clustering metrics),
``datasets`` (retrieval splits and data sources), ``baselines`` (LSH, PCAH, ITQ, SpH, SH),
``index`` (Hamming search; saved indexes), ``sources`` and ``collection`` (collections streamed into a
saved index), ``neighbours`` (neighbourhood graphs of a training set), ``evaluation``
(paper-style reports), ``losses`` (loss terms),
``schemes`` (the registry of adversarial hashing schemes and their presets), ``hasher`` (``Hasher``: a
trained scheme), ``training`` (``fit``), ``export`` (SavedModel / TF Serving / TFLite writers),
``serving`` (exports read back), ``summaries`` (TensorBoard logging of training). ``fit`` trains a scheme
and returns a ``Hasher``; ``load`` reads an export back.
"""

from tfhash import (
           baselines,
           codes,
           collection,
           datasets,
           evaluation,
           export,
           hasher,
           index,
           losses,
           metrics,
           neighbours,
           schemes,
           serving,
           sources,
           summaries,
           training,
)
from tfhash._version import __version__
from tfhash.collection import build
from tfhash.hasher import Hasher
from tfhash.serving import load
from tfhash.training import fit

__all__ = ["__version__", "Hasher", "build", "baselines", "codes", "collection", "datasets", "evaluation", "export",
           "fit", "hasher",
           "index", "load", "losses", "metrics", "neighbours", "schemes", "serving", "sources", "summaries",
           "training"]
