"""Neighbourhood structure of a training set (BGAN, Sec. 3.1 and Alg. 1), kept as sparse neighbour lists.

1. **First ranking**: the K1 nearest neighbours of every item by cosine similarity of its features
   (the item itself excluded), computed blockwise -- with Faiss when it is installed, else numpy -- so
   memory stays O(n * (d + block)) and never O(n^2).
2. **Expansion**: items whose K1-lists overlap most are neighbours of neighbours. For item i, the K2
   items j with the largest overlap |L_i & L_j| are found (ranking by overlap is ranking by Alg. 1's
   1 / ||(S1)_i - (S1)_j||^2, since rows of S1 are +-1 vectors with K1 ones), and i's final list is
   L_i together with the K1-lists of those K2 items (Eq. 4).

S_ij = +1 when j is in i's final list, -1 otherwise. The lists are stored in CSR form
(:class:`NeighbourGraph`); a training step asks :meth:`NeighbourGraph.pair_keys` membership questions
for the pairs of its batch.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np
import scipy.sparse
from numpy.typing import ArrayLike

from tfhash import _validation


@dataclasses.dataclass
class NeighbourGraph:
    """Neighbour lists in CSR form: the neighbours of item i are ``indices[indptr[i]:indptr[i + 1]]`` (sorted).

    Attributes:
        indptr: int64 ``[n + 1]``.
        indices: int32 ``[nnz]``.
        first_lists: int32 ``[n, k1]``, the first-ranking K1 lists (nearest first).
        seconds: time taken to build the graph.
    """

    indptr: np.ndarray
    indices: np.ndarray
    first_lists: np.ndarray
    seconds: float = 0.0

    @property
    def num_items(self) -> int:
        return self.indptr.shape[0] - 1

    def neighbours(self, i: int) -> np.ndarray:
        return self.indices[self.indptr[i]:self.indptr[i + 1]]

    def mean_degree(self) -> float:
        return float(np.diff(self.indptr).mean()) if self.num_items else 0.0

    def pair_keys(self) -> np.ndarray:
        """Sorted int64 keys ``i * n + j`` of every pair with S_ij = +1 (for searchsorted lookups)."""
        n = self.num_items
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(self.indptr))
        return rows * n + self.indices.astype(np.int64)  # sorted: rows ascend, each row's indices ascend

    def same_label_fraction(self, labels: ArrayLike) -> float:
        """Fraction of neighbour pairs whose items share a class id (a check of the graph's quality)."""
        labels = np.asarray(labels)
        rows = np.repeat(np.arange(self.num_items), np.diff(self.indptr))
        return float(np.mean(labels[rows] == labels[self.indices])) if rows.size else 0.0


class _Progress:
    """A one-line progress report on stderr for long builds (quiet for small ones)."""

    def __init__(self, title, total, enabled):
        self.title, self.total, self.enabled = title, total, enabled
        self.start = time.perf_counter()

    def update(self, done):
        if self.enabled:
            elapsed = time.perf_counter() - self.start
            print(f"\r{self.title}: {done}/{self.total} items, {elapsed:.0f} s", end="", file=sys.stderr, flush=True)

    def close(self):
        if self.enabled:
            print(file=sys.stderr, flush=True)


def _normalised_rows(features):
    x = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _drop_self(candidates, k, first_row):
    """Rows of candidate neighbours ``[b, k + 1]`` (best first) -> ``[b, k]`` without the item itself."""
    rows = np.arange(first_row, first_row + candidates.shape[0])[:, None]
    keep = candidates != rows
    # An item found among its own candidates leaves k others; otherwise the last (worst) one is dropped.
    keep[~(~keep).any(axis=1), -1] = False
    return candidates[keep].reshape(candidates.shape[0], k)


def cosine_knn(features: ArrayLike, k: int, *, block_size: int = 1024, backend: str = "auto",
               progress: bool | None = None) -> np.ndarray:
    """The ``k`` nearest neighbours of every item by cosine similarity, nearest first: int32 ``[n, k]``.

    Args:
        features: ``[n, ...]`` numbers (flattened per item).
        k: neighbours per item (the item itself is never one); must be smaller than n.
        block_size: queries per block; bounds memory at about ``12 * block_size * n`` bytes (numpy).
        backend: ``"faiss"``, ``"numpy"`` or ``"auto"`` (Faiss when installed).
        progress: print progress on stderr (default: for more than 20,000 items).
    """
    x = _normalised_rows(features)
    n = x.shape[0]
    k = _validation.check_positive_int(k, "k")
    if k >= n:
        raise ValueError(f"`k` must be smaller than the number of items ({n}), got {k}.")
    _validation.check_choice(backend, "backend", ("auto", "faiss", "numpy"))
    if backend == "auto":
        try:
            import faiss
            backend = "faiss"
        except ImportError:
            backend = "numpy"
    report = _Progress("neighbour lists", n, n > 20_000 if progress is None else progress)
    out = np.empty((n, k), np.int32)
    if backend == "faiss":
        import faiss

        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        for start in range(0, n, block_size):
            _, found = index.search(x[start:start + block_size], k + 1)
            out[start:start + block_size] = _drop_self(found, k, start)
            report.update(min(n, start + block_size))
    else:
        for start in range(0, n, block_size):
            similarities = x[start:start + block_size] @ x.T
            top = np.argpartition(-similarities, k, axis=1)[:, :k + 1]
            order = np.argsort(-np.take_along_axis(similarities, top, axis=1), axis=1, kind="stable")
            out[start:start + block_size] = _drop_self(np.take_along_axis(top, order, axis=1), k, start)
            report.update(min(n, start + block_size))
    report.close()
    return out


def expand_neighbourhood(first_lists: np.ndarray, k2: int, *, block_size: int = 4096,
                         progress: bool | None = None) -> tuple:
    """Alg. 1's expansion of K1-lists ``[n, k1]``: CSR ``(indptr, indices)`` of each item's final list."""
    first_lists = np.asarray(first_lists)
    n, k1 = first_lists.shape
    k2 = _validation.check_positive_int(k2, "k2")
    if k2 >= n:
        raise ValueError(f"`k2` must be smaller than the number of items ({n}), got {k2}.")
    membership = scipy.sparse.csr_matrix(
        (np.ones(n * k1, np.int32), first_lists.ravel(), np.arange(0, n * k1 + 1, k1)), shape=(n, n))
    membership_t = membership.T.tocsr()
    report = _Progress("neighbourhood expansion", n, n > 20_000 if progress is None else progress)
    indptr = np.zeros(n + 1, np.int64)
    parts = []
    for start in range(0, n, block_size):
        stop = min(n, start + block_size)
        overlap = (membership[start:stop] @ membership_t).tocsr()  # |L_i & L_j| for the block's rows
        second = np.empty((stop - start, k2), np.int64)
        for row in range(stop - start):
            lo, hi = overlap.indptr[row], overlap.indptr[row + 1]
            cols, counts = overlap.indices[lo:hi], overlap.data[lo:hi]
            counts = np.where(cols == start + row, -1, counts)  # never the item itself
            if cols.size > k2:
                best = np.argpartition(-counts, k2 - 1)[:k2]
            else:  # fewer overlapping items than k2: pad with the item itself (its own list is kept anyway)
                best = np.arange(cols.size)
            chosen = cols[best]
            second[row, :chosen.size] = chosen
            second[row, chosen.size:] = start + row
        rows = np.arange(start, stop)
        candidates = np.concatenate([first_lists[start:stop], first_lists[second].reshape(stop - start, -1)], axis=1)
        candidates = np.sort(candidates, axis=1)
        keep = np.ones_like(candidates, dtype=bool)
        keep[:, 1:] = candidates[:, 1:] != candidates[:, :-1]
        keep &= candidates != rows[:, None]
        indptr[start + 1:stop + 1] = indptr[start] + np.cumsum(keep.sum(axis=1))
        parts.append(candidates[keep].astype(np.int32))
        report.update(stop)
    report.close()
    indices = np.concatenate(parts) if parts else np.empty(0, np.int32)
    return indptr, indices


PCA_COMPONENTS = 128  # BGAN's `graph_features="pca"`


def pca_features(x: ArrayLike, components: int = PCA_COMPONENTS, seed: int = 0) -> np.ndarray:
    """The first ``components`` principal components of the flattened items (fewer when the items have fewer
    dimensions, or there are fewer items): a graph built on them ranks by the directions that vary most
    rather than by every pixel alike."""
    from sklearn.decomposition import PCA

    flat = np.asarray(x).reshape(len(x), -1)
    components = min(_validation.check_positive_int(components, "components"), *flat.shape)
    return PCA(n_components=components, random_state=seed).fit_transform(flat)


def neighbourhood_graph(features: ArrayLike, k1: int = 20, k2: int = 30, *, backend: str = "auto",
                        progress: bool | None = None) -> NeighbourGraph:
    """Alg. 1: K1 cosine nearest neighbours, expanded through the K2 items whose lists overlap most.

    Args:
        features: ``[n, ...]`` finite numbers, one row per training item.
        k1, k2: Alg. 1's K1 and K2 (Sec. 4.1.4: 20 and 30); both smaller than n.

    Returns:
        A :class:`NeighbourGraph`.
    """
    features = _validation.check_features(features, "features", min_items=2)
    n = features.shape[0]
    for name, value in (("k1", k1), ("k2", k2)):
        value = _validation.check_positive_int(value, name)
        if value >= n:
            raise ValueError(f"`{name}` must be smaller than the number of training items ({n}), got {value}.")
    start = time.perf_counter()
    first = cosine_knn(features, k1, backend=backend, progress=progress)
    indptr, indices = expand_neighbourhood(first, k2, progress=progress)
    return NeighbourGraph(indptr=indptr, indices=indices, first_lists=first, seconds=time.perf_counter() - start)
