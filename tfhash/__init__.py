"""tfhash: adversarial learning to hash in TensorFlow/Keras.

Submodules: ``codes`` (the binary code convention), ``metrics`` (retrieval and clustering metrics),
``datasets`` (retrieval splits and data sources), ``baselines`` (LSH, PCAH, ITQ, SpH, SH),
``index`` (Hamming search), ``evaluation`` (paper-style reports).
"""

__version__ = "0.1.0"

from tfhash import baselines, codes, datasets, evaluation, index, metrics  # noqa: E402

__all__ = ["__version__", "baselines", "codes", "datasets", "evaluation", "index", "metrics"]
