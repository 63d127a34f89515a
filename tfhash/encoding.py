"""Items in, codes out: the input checks and the batched encoding loop that training, in-memory encoding,
the export and served models share (so none of them imports a scheme's internals).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from tfhash import _validation
from tfhash import codes as codes_lib

INPUT_KINDS = ("images", "features")
IMAGE_RANGE_TOLERANCE = 1e-6
PIXEL_SCALE = 255.0
PIXEL_HINT = " Pixel values 0-255: divide by 255 (or pass uint8 pixels, which are scaled)."


def check_image_range(low: float, high: float, name: str) -> None:
    """Raises ``ValueError`` unless [low, high] lies within the image range [0, 1]."""
    if low < -IMAGE_RANGE_TOLERANCE or high > 1.0 + IMAGE_RANGE_TOLERANCE:
        hint = PIXEL_HINT if high > 1.5 else ""
        raise ValueError(f"`{name}` must hold images with values in [0, 1], got values in [{low:g}, {high:g}].{hint}")


def check_items(x: ArrayLike, item_shape: tuple | None = None, name: str = "x", origin: str = "as in training",
                input_kind: str = "features") -> np.ndarray:
    """Checks items ``[n, *item_shape]`` (finite numbers) and returns them as float32.

    ``input_kind="images"``: values must lie in [0, 1]; uint8 arrays are pixels 0-255 and are divided by
    255 (the rule of the export's ``serving_pixels`` signature); other integer types are refused.
    ``"features"``: any finite numbers, used as they are.
    """
    x = _validation.check_features(x, name)
    if item_shape is not None and tuple(x.shape[1:]) != tuple(item_shape):
        raise ValueError(f"`{name}` must have items of shape {tuple(item_shape)} ({origin}), got {tuple(x.shape[1:])}.")
    if input_kind == "images":
        if x.dtype == np.uint8:
            return x.astype(np.float32) / np.float32(PIXEL_SCALE)
        if x.dtype.kind in "iu":
            raise ValueError(f"`{name}` must be float images in [0, 1] or uint8 pixels, got dtype {x.dtype}; "
                             "convert with x.astype('float32') / 255.")
        if x.size:
            check_image_range(float(np.min(x)), float(np.max(x)), name)
    return x.astype(np.float32, copy=False)


def check_training_dtype(dtype: np.dtype, input_kind: str) -> None:
    """Raises ``ValueError`` for training features of an integer type other than uint8: integer vectors are
    usually neighbour ids (``.ivecs`` ground truth), not features. Images are checked by :func:`check_items`."""
    if input_kind == "features" and np.issubdtype(dtype, np.integer) and dtype != np.uint8:
        raise ValueError(f"`x` must hold floating-point features (or uint8, as in .bvecs files), got {dtype}. "
                         "Integer vectors are usually neighbour ids (.ivecs ground truth), not features; if "
                         "they really are features, pass x.astype('float32').")


def serving_signatures(input_kind: str) -> tuple:
    """Names of an export's signatures: ``serving_default`` (float inputs as in training) and, for image
    schemes, ``serving_pixels`` (uint8 pixels divided by 255)."""
    return ("serving_default", "serving_pixels") if input_kind == "images" else ("serving_default",)


def item_chunks(x: ArrayLike, chunk_size: int = 65536) -> Iterator[np.ndarray]:
    """Numpy chunks of training items ``x`` (an array, memory-mapped or not, or a batched ``tf.data.Dataset``
    whose elements are items or ``(x, ...)`` tuples), so ``adapt`` can stream large inputs once."""
    if isinstance(x, tf.data.Dataset):
        for batch in x:
            yield np.asarray(batch[0] if isinstance(batch, (tuple, list)) else batch)
    else:
        for start in range(0, x.shape[0], chunk_size):
            yield np.asarray(x[start:start + chunk_size])


def serving_outputs(encoder: Callable, inputs: tf.Tensor, threshold: float) -> dict:
    """``{"codes": packed uint8, "probabilities": float32}`` of an encoder, as served and exported."""
    probabilities = encoder(inputs, training=False)
    return {"codes": codes_lib.pack_tf(tf.cast(probabilities >= threshold, tf.float32)),
            "probabilities": probabilities}


def encode_in_batches(serve: Callable, x: np.ndarray, batch_size: int, bits: int) -> dict:
    """Runs ``serve`` (a numpy batch -> {"codes", "probabilities"}, tensors or arrays) over ``x`` in
    batches; numpy results."""
    batch_size = _validation.check_positive_int(batch_size, "batch_size")
    parts = []
    for start in range(0, x.shape[0], batch_size):
        part = serve(x[start:start + batch_size])
        if not np.all(np.isfinite(np.asarray(part["probabilities"]))):
            # all-zero codes from NaN probabilities look like codes: stop before they reach an index
            raise ValueError(f"the encoder gave non-finite probabilities for items {start} to "
                             f"{min(start + batch_size, x.shape[0]) - 1} of `x`, so their codes mean nothing: a broken "
                             "or hand-converted model, or items outside the range it was trained on.")
        parts.append(part)
    if not parts:
        return {"codes": np.empty((0, codes_lib.num_bytes(bits)), np.uint8),
                "probabilities": np.empty((0, bits), np.float32)}
    return {key: np.concatenate([np.asarray(p[key]) for p in parts]) for key in ("codes", "probabilities")}
