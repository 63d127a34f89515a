"""Binary codes: the one convention every part of tfhash uses.

The convention (also the layout of Faiss ``IndexBinary*``, so codes drop into Faiss unchanged):

* **Bits.** Bit k of an item is 1 where its continuous output k is *at or above* the threshold
  (0.5 for sigmoid outputs, 0.0 for tanh / +-1 outputs), the same rule for queries and database.
* **Packing.** An item with ``bits`` bits is stored as ``ceil(bits / 8)`` uint8 bytes; bit k lives in
  byte ``k // 8`` at position ``k % 8`` counting from the least-significant bit
  (``np.packbits(..., bitorder="little")``). Unused high positions of the last byte are zero.
* **Distance.** The Hamming distance of two packed codes is the popcount of their XOR.

``pack``/``unpack`` work on numpy arrays; ``pack_tf``/``unpack_tf`` are the TensorFlow twins, written
with a matrix product (a multiply-and-sum) / floor-div-and-mod only, so they lower to builtin TFLite ops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:  # TensorFlow is imported by the functions that use it
    import tensorflow as tf

from tfhash import _validation

SIGMOID_THRESHOLD = 0.5
TANH_THRESHOLD = 0.0


def num_bytes(bits: int) -> int:
    """Bytes per packed code: ``ceil(bits / 8)``."""
    return (_validation.check_bits(bits) + 7) // 8


def binarize(outputs: ArrayLike, threshold: float = SIGMOID_THRESHOLD) -> np.ndarray:
    """Continuous outputs ``[n, bits]`` -> {0, 1} uint8 bits: 1 where ``outputs >= threshold``."""
    outputs = np.asarray(outputs)
    if outputs.ndim != 2:
        raise ValueError(f"`outputs` must be 2-D [items, bits], got shape {outputs.shape}.")
    if outputs.dtype.kind == "f" and not np.all(np.isfinite(outputs)):
        raise ValueError("`outputs` must be finite, got NaN or inf.")
    return (outputs >= threshold).astype(np.uint8)


def pack(bits01: ArrayLike) -> np.ndarray:
    """Packs {0, 1} bits ``[n, bits]`` into uint8 codes ``[n, ceil(bits / 8)]`` (LSB-first).

    Args:
        bits01: array-like of 0/1 values (bool or any integer dtype), shape ``[n, bits]``.

    Returns:
        uint8 array ``[n, ceil(bits / 8)]`` in the convention of this module.
    """
    bits01 = np.asarray(bits01)
    if bits01.ndim != 2 or bits01.shape[1] < 1:
        raise ValueError(f"`bits01` must be 2-D [items, bits] with bits >= 1, got shape {bits01.shape}.")
    if bits01.dtype != np.bool_:
        if bits01.dtype.kind not in "iuf" or not np.all((bits01 == 0) | (bits01 == 1)):
            raise ValueError(
                "`bits01` must hold only 0 and 1 (use tfhash.codes.binarize for continuous outputs), "
                f"got dtype {bits01.dtype} with other values."
            )
    return np.packbits(bits01.astype(bool), axis=1, bitorder="little")


def unpack(packed: ArrayLike, bits: int) -> np.ndarray:
    """Unpacks uint8 codes ``[n, ceil(bits / 8)]`` into {0, 1} uint8 bits ``[n, bits]``."""
    packed = _validation.check_codes(packed, "packed", bits=bits)
    return np.unpackbits(packed, axis=1, count=int(bits), bitorder="little")


def pack_tf(bits01: tf.Tensor) -> tf.Tensor:
    """TensorFlow twin of :func:`pack` for a ``[batch, bits]`` tensor of 0/1 values (any real dtype).

    One matrix product with a constant ``[bits, ceil(bits / 8)]`` matrix whose entry (k, k // 8) is
    2^(k % 8): a builtin TFLite op (no bitwise ops), exact in float32 since every byte sum is <= 255,
    and cheaper than reshaping to bytes.
    """
    import tensorflow as tf

    bits01 = tf.convert_to_tensor(bits01)
    bits = bits01.shape[-1]
    if bits is None:
        raise ValueError("`bits01` must have a known last dimension (the number of bits).")
    weights = np.zeros((bits, (bits + 7) // 8), dtype=np.float32)
    weights[np.arange(bits), np.arange(bits) // 8] = 2.0 ** (np.arange(bits) % 8)
    packed = tf.matmul(tf.cast(bits01, tf.float32), tf.constant(weights))
    return tf.cast(packed, tf.uint8)


def unpack_tf(packed: tf.Tensor, bits: int) -> tf.Tensor:
    """TensorFlow twin of :func:`unpack`: uint8 ``[batch, ceil(bits / 8)]`` -> uint8 ``[batch, bits]``."""
    import tensorflow as tf

    bits = _validation.check_bits(bits)
    packed = tf.cast(tf.convert_to_tensor(packed), tf.int32)
    powers = tf.constant([1, 2, 4, 8, 16, 32, 64, 128], dtype=tf.int32)
    expanded = tf.math.floormod(tf.math.floordiv(packed[..., None], powers), 2)
    expanded = tf.reshape(expanded, [-1, packed.shape[-1] * 8])
    return tf.cast(expanded[:, :bits], tf.uint8)


def distance_dtype(width: int) -> np.dtype:
    """Smallest unsigned dtype that holds Hamming distances between codes ``width`` bytes wide."""
    max_distance = 8 * width
    if max_distance <= np.iinfo(np.uint8).max:
        return np.dtype(np.uint8)
    if max_distance <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def as_words(codes: np.ndarray) -> np.ndarray:
    """Views packed codes ``[n, width]`` as ``[n, words]`` of the widest unsigned int dividing width.

    XOR + popcount on 64-bit words is several times faster than on bytes; the view costs nothing
    when the codes are C-contiguous.
    """
    codes = np.ascontiguousarray(codes)
    width = codes.shape[1]
    for dtype in (np.uint64, np.uint32, np.uint16):
        size = np.dtype(dtype).itemsize
        if width % size == 0:
            return codes.view(dtype)
    return codes


class HammingComputer:
    """Distances from one query at a time to a fixed database, into reusable buffers.

    Memory is O(database size) for the distance row and one XOR buffer; nothing grows with the number
    of queries, so callers stream queries through it. Not thread-safe: use one per thread.
    """

    def __init__(self, database_codes):
        self.words = as_words(database_codes)
        self.size = self.words.shape[0]
        self.dtype = distance_dtype(database_codes.shape[1])
        self._xor = np.empty(self.size, dtype=self.words.dtype)
        self._count = np.empty(self.size, dtype=np.uint8)
        self.out = np.empty(self.size, dtype=self.dtype)

    def __call__(self, query_words):
        """Distances ``[database size]`` from one query (a row of :func:`as_words` output).

        The returned array is a buffer that the next call overwrites.
        """
        if self.words.shape[1] == 1 and self.dtype == np.uint8:
            np.bitwise_xor(self.words[:, 0], query_words[0], out=self._xor)
            return np.bitwise_count(self._xor, out=self.out)
        self.out[...] = 0
        for w in range(self.words.shape[1]):
            np.bitwise_xor(self.words[:, w], query_words[w], out=self._xor)
            np.bitwise_count(self._xor, out=self._count)
            np.add(self.out, self._count, out=self.out, casting="unsafe")
        return self.out


def hamming_distance(query_codes: ArrayLike, database_codes: ArrayLike, *, chunk_size: int = 1 << 22) -> np.ndarray:
    """Full Hamming distance matrix ``[n_query, n_database]`` between packed codes.

    The work is done in blocks of at most ``chunk_size`` distances, so temporaries stay bounded;
    only the returned matrix grows with the inputs (use :mod:`tfhash.index` for top-k search over
    databases too large for a full matrix).
    """
    query_codes = _validation.check_codes(query_codes, "query_codes")
    database_codes = _validation.check_codes(database_codes, "database_codes")
    _validation.check_same_width(query_codes, database_codes)
    queries, database = as_words(query_codes), as_words(database_codes)
    out = np.empty((queries.shape[0], database.shape[0]), dtype=distance_dtype(query_codes.shape[1]))
    rows = max(1, chunk_size // max(1, database.shape[0]))
    cols = max(1, chunk_size // rows)
    for q0 in range(0, queries.shape[0], rows):
        q = queries[q0:q0 + rows]
        for d0 in range(0, database.shape[0], cols):
            d = database[d0:d0 + cols]
            block = out[q0:q0 + rows, d0:d0 + cols]
            block[...] = 0
            for w in range(queries.shape[1]):
                np.add(block, np.bitwise_count(q[:, None, w] ^ d[None, :, w]), out=block, casting="unsafe")
    return out
