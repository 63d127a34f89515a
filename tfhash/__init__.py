"""tfhash: adversarial learning to hash in TensorFlow/Keras.

Submodules: ``codes`` (the binary code convention), ``metrics`` (retrieval and clustering metrics),
``datasets`` (retrieval splits and data sources), ``baselines`` (LSH, PCAH, ITQ, SpH, SH),
``index`` (Hamming search), ``evaluation`` (paper-style reports), ``losses`` (loss terms),
``schemes`` (the registry of adversarial hashing schemes), ``export`` (SavedModel / TF Serving /
TFLite), ``summaries`` (TensorBoard logging of training). ``fit`` trains a scheme and returns a ``Hasher``; ``load`` reads an export back.
"""

__version__ = "0.1.0"

from tfhash import baselines, codes, datasets, evaluation, index, losses, metrics, schemes  # noqa: E402
from tfhash.training import Hasher, fit  # noqa: E402
from tfhash import export, summaries  # noqa: E402
from tfhash.export import load  # noqa: E402

__all__ = ["__version__", "Hasher", "baselines", "codes", "datasets", "evaluation", "export", "fit", "index",
           "load", "losses", "metrics", "schemes", "summaries"]
