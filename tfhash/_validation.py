"""Argument checks shared by every public function.

Each check raises ``ValueError`` naming the argument, what was expected and what arrived, and runs
before any expensive work starts.
"""

import math
import numbers

import numpy as np


def error_summary(err, limit=300):
    """The first line of an exception's message (or its type name), for errors that name a file."""
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:limit]


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype} and shape {value.shape}"
    return f"{type(value).__name__} {value!r}"


def check_bits(bits, name="bits"):
    """Returns ``bits`` as an int after checking it is a positive integer."""
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or bits < 1:
        raise ValueError(f"`{name}` must be a positive integer number of bits, got {_describe(bits)}.")
    return int(bits)


def check_non_negative_number(value, name):
    """A finite real number >= 0 (not a bool); returned as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative number, got {value!r}.")
    return float(value)


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {_describe(value)}.")
    return int(value)


def check_seed(seed, name="seed"):
    """A non-negative integer seed (not a bool, not None: every run of tfhash is reproducible)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"`{name}` must be a non-negative integer (runs are always seeded), got {_describe(seed)}.")
    return int(seed)


def check_codes(codes, name, bits=None):
    """Checks packed codes: a 2-D uint8 array, ``ceil(bits / 8)`` bytes wide when ``bits`` is given."""
    if not isinstance(codes, np.ndarray):
        # Accept tensors and lists, but only if they convert to uint8 without a cast.
        try:
            codes = np.asarray(codes)
        except Exception as err:  # pragma: no cover - exotic inputs
            raise ValueError(f"`{name}` must be packed uint8 codes, got {type(codes).__name__}.") from err
    if codes.dtype != np.uint8:
        raise ValueError(
            f"`{name}` must be packed codes of dtype uint8 (use tfhash.codes.pack on 0/1 bits), "
            f"got {_describe(codes)}."
        )
    if codes.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D [items, bytes] packed codes, got {_describe(codes)}.")
    if bits is not None:
        width = (check_bits(bits) + 7) // 8
        if codes.shape[1] != width:
            raise ValueError(
                f"`{name}` must be {width} bytes wide for bits={bits} (ceil(bits / 8)), "
                f"got {codes.shape[1]} bytes (shape {codes.shape})."
            )
        used = int(bits) % 8
        if used and codes.shape[0]:
            # Unused high positions of the last byte must be zero: set ones would count in every distance.
            padded = np.flatnonzero(codes[:, -1] >> used)
            if padded.size:
                raise ValueError(
                    f"`{name}` must have the unused high {8 - used} bits of the last byte zero for bits={bits}, "
                    f"got them set in {padded.size} codes (first at row {int(padded[0])}); "
                    "pack codes with tfhash.codes.pack."
                )
    return codes


def check_same_width(query_codes, database_codes, query_name="query_codes", database_name="database_codes"):
    if query_codes.shape[1] != database_codes.shape[1]:
        raise ValueError(
            f"`{query_name}` and `{database_name}` must have the same code width, got "
            f"{query_codes.shape[1]} and {database_codes.shape[1]} bytes."
        )


def check_labels(labels, name, num_items, items_name):
    """Checks labels: 1-D class ids, or a 2-D 0/1 multi-hot matrix; one row per item.

    A column ``[n, 1]`` is class ids (squeezed): read as multi-hot it would make every item with a
    non-zero id relevant to every other.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim not in (1, 2):
        raise ValueError(
            f"`{name}` must be 1-D class ids or a 2-D multi-hot matrix, got {_describe(labels)}."
        )
    if labels.shape[0] != num_items:
        raise ValueError(
            f"`{name}` must have one row per item of `{items_name}` ({num_items}), "
            f"got {labels.shape[0]}."
        )
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        raise ValueError(f"`{name}` must be finite, got NaN or inf.")
    if labels.ndim == 2 and not np.isin(labels, (0, 1)).all():
        raise ValueError(f"`{name}` as a 2-D array must be 0/1 multi-hot rows, got values other than 0 and 1; "
                         "for class ids pass a 1-D array.")
    return labels


def check_matching_labels(query_labels, database_labels):
    def kind(labels):
        return "numbers" if labels.dtype.kind in "iufb" else "strings" if labels.dtype.kind in "US" else \
            f"{labels.dtype} values"

    if kind(query_labels) != kind(database_labels):
        raise ValueError(f"`query_labels` and `database_labels` must be labels of one kind, got {kind(query_labels)} "
                         f"and {kind(database_labels)} (no query would ever match a database item).")
    if query_labels.ndim != database_labels.ndim or (
        query_labels.ndim == 2 and query_labels.shape[1] != database_labels.shape[1]
    ):
        raise ValueError(
            "`query_labels` and `database_labels` must both be 1-D class ids or both multi-hot with "
            f"the same number of classes, got shapes {query_labels.shape} and {database_labels.shape}."
        )


def check_features(x, name, ndim=None, min_items=1):
    """Checks a float feature/image array: numeric, finite, with at least ``min_items`` rows."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise ValueError(f"`{name}` must be a numeric array, got {_describe(x)}.")
    if ndim is not None and x.ndim not in np.atleast_1d(ndim):
        raise ValueError(f"`{name}` must have {ndim} dimensions, got {_describe(x)}.")
    if x.ndim == 0 or x.shape[0] < min_items:
        raise ValueError(f"`{name}` must hold at least {min_items} items, got {_describe(x)}.")
    if x.dtype.kind == "f":
        # Row chunks: a memory-mapped file is streamed, never held twice in memory.
        rows = max(1, (1 << 24) // max(1, int(np.prod(x.shape[1:]))))
        count, first = 0, None
        for start in range(0, x.shape[0], rows):
            bad = ~np.isfinite(x[start:start + rows])
            if bad.any():
                count += int(bad.sum())
                if first is None:
                    index = np.argwhere(bad)[0]
                    first = (int(index[0]) + start,) + tuple(int(i) for i in index[1:])
        if count:
            raise ValueError(f"`{name}` must be finite, got {count} NaN/inf values (first at index {first}).")
    return x


def check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {sorted(choices, key=str)}, got {value!r}.")
    return value


def check_training_labels(labels, name, num_items, items_name):
    """Labels for (semi-)supervised training: integer class ids ``[n]`` with -1 for unlabelled items, or
    0/1 multi-hot rows ``[n, classes]`` with all-zero rows unlabelled. A column ``[n, 1]`` is class ids.

    Returns int64 ids or float32 multi-hot rows. At least one item must be labelled.
    """
    if labels is None:
        raise ValueError(f"`{name}` is required: class ids [n] (-1 = unlabelled) or multi-hot rows [n, classes] "
                         "(all zeros = unlabelled), got None.")
    labels = check_labels(labels, name, num_items, items_name)
    if labels.dtype.kind not in "iufb":
        raise ValueError(f"`{name}` must be integer class ids (-1 = unlabelled) or 0/1 multi-hot rows, got "
                         f"{_describe(labels)}; map names to ids first, e.g. names, y = np.unique(y, "
                         "return_inverse=True).")
    if labels.ndim == 1:
        if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
            raise ValueError(f"`{name}` must hold integer class ids (-1 = unlabelled), got non-integer values.")
        if labels.dtype.kind not in "iuf" or (labels.size and labels.min() < -1):
            raise ValueError(f"`{name}` must hold class ids >= 0, or -1 for unlabelled items, got {_describe(labels)} "
                             f"with minimum {labels.min() if labels.size else None}.")
        labels = labels.astype(np.int64)
        labelled = labels >= 0
    else:
        labels = labels.astype(np.float32)
        labelled = labels.any(axis=1)
    if not labelled.any():
        raise ValueError(f"`{name}` labels none of the {num_items} items: at least one must be labelled.")
    return labels
