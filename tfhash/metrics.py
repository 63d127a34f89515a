"""Retrieval and clustering metrics on packed binary codes, computed the way hashing papers report them.

Conventions (see also ``tfhash.codes`` for the bit convention):

* **Ranking.** Database items are ranked by Hamming distance to the query; equal distances are ordered
  by ascending database index (``ties="index"``, what Faiss, ``tf.math.top_k`` and stable sorts do).
  ``ties="average"`` gives the tie-aware expectation over every order of tied items
  (McSherry & Najork, ECIR 2008), which needs only per-distance counts.
* **Relevance.** Single-label: same class id. Multi-label (2-D 0/1 labels): at least one shared label.
  ANN protocol: the query's top-N true Euclidean neighbours (:func:`euclidean_ground_truth`).
  Every query and database item must be labelled: a -1 class id (unlabelled, in training) or an
  all-zero multi-hot row is refused, so both label forms give one figure; labels of two kinds (numbers
  and strings) are refused too.
* **AP@R** (``top_k=R``): sum of precision at each relevant rank within the top R, divided by the
  number of relevant items within the top R; ``top_k=None`` ranks the whole database.
* **Queries with nothing relevant** (in the top R for AP@R): count as 0 (``zero_relevance="zero"``,
  the default) or are left out of the mean (``"drop"``).
* **Hamming-radius precision**: items at distance <= r (inclusive); an empty ball scores 0, and the
  number of empty balls is returned too.

Every function streams the queries through one distance row at a time, so memory is O(database size)
per worker thread, whatever the number of queries.
"""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from tfhash import _kernels, _validation
from tfhash import codes as codes_lib

RadiusPrecision = collections.namedtuple("RadiusPrecision", ["precision", "empty_queries"])
PrecisionRecallCurve = collections.namedtuple("PrecisionRecallCurve", ["radius", "precision", "recall"])

_TIES = ("index", "average")
_ZERO_RELEVANCE = ("zero", "drop")


# ---------------------------------------------------------------------------------------------------
# Relevance: which database items count as relevant for query i.


class _LabelRelevance:
    """Same class (1-D labels) or at least one shared label (2-D multi-hot labels)."""

    def __init__(self, query_labels, database_labels):
        self.multilabel = query_labels.ndim == 2
        if self.multilabel:
            self.query = (np.asarray(query_labels) != 0).astype(np.float32)
            self.database = (np.asarray(database_labels) != 0).astype(np.float32)
        else:
            self.query, self.database = query_labels, database_labels

    def __call__(self, i):
        if self.multilabel:
            return (self.database @ self.query[i]) > 0
        return self.database == self.query[i]


class _NeighbourRelevance:
    """The database ids listed in row i of a ground-truth neighbour table."""

    def __init__(self, ground_truth, database_size):
        self.ground_truth = ground_truth
        self.mask = np.zeros(database_size, dtype=bool)

    def __call__(self, i):
        # One mask per instance; _map_queries gives each thread its own instance.
        self.mask[...] = False
        self.mask[self.ground_truth[i]] = True
        return self.mask


# ---------------------------------------------------------------------------------------------------
# The per-query engine.


def _map_queries(query_codes, database_codes, make_relevance, kernel, n_jobs=None):
    """Runs ``kernel(distances, relevant)`` for every query; returns the stacked results.

    Queries are split into contiguous ranges, one per worker thread; numpy releases the GIL in the
    heavy calls (XOR, popcount, sort), so threads scale on a multi-core machine.
    """
    queries = codes_lib.as_words(query_codes)
    num_queries = queries.shape[0]
    n_jobs = _kernels.threads_for(num_queries, database_codes.shape[0], n_jobs)

    def run(start, stop):
        computer = codes_lib.HammingComputer(database_codes)
        relevance = make_relevance()
        return [kernel(computer(queries[i]), relevance(i)) for i in range(start, stop)]

    bounds = np.linspace(0, num_queries, n_jobs + 1).astype(int)
    if n_jobs == 1:
        results = run(0, num_queries)
    else:
        with concurrent.futures.ThreadPoolExecutor(n_jobs) as pool:
            parts = pool.map(lambda b: run(*b), zip(bounds[:-1], bounds[1:]))
            results = [r for part in parts for r in part]
    return np.asarray(results, dtype=np.float64)


def _distance_counts(distances, relevant, num_distances):
    """Items and relevant items at each Hamming distance 0..num_distances-1."""
    items = np.bincount(distances, minlength=num_distances)
    hits = np.bincount(distances[relevant], minlength=num_distances)
    return items, hits


def _top_k_ids(distances, k):
    """Ids of the k nearest items, ties by ascending id, in ranking order (O(n), no full sort)."""
    if k >= distances.shape[0]:
        return np.argsort(distances, kind="stable")
    counts = np.cumsum(np.bincount(distances))
    cutoff = int(np.searchsorted(counts, k))  # first distance at which k items are reached
    closer = np.flatnonzero(distances < cutoff)
    closer = closer[np.argsort(distances[closer], kind="stable")]
    at_cutoff = np.flatnonzero(distances == cutoff)[: k - closer.shape[0]]
    return np.concatenate([closer, at_cutoff])


def _ap_index_ties(distances, relevant, top_k):
    if top_k is None:
        ranked = np.argsort(distances, kind="stable")
    else:
        ranked = _top_k_ids(distances, top_k)
    hit_ranks = np.flatnonzero(relevant[ranked]) + 1
    if hit_ranks.shape[0] == 0:
        return np.nan
    return float(np.mean(np.arange(1, hit_ranks.shape[0] + 1) / hit_ranks))


def _harmonic_span(before, size):
    """sum_{p=1..size} 1 / (before + p) for arrays ``before``, ``size`` (float64)."""
    from scipy.special import digamma

    out = np.empty(before.shape[0], dtype=np.float64)
    for j, (s, n) in enumerate(zip(before.tolist(), size.tolist())):
        if n <= 4096:  # direct sum: exact to rounding, no cancellation
            out[j] = np.sum(1.0 / np.arange(s + 1, s + n + 1, dtype=np.float64))
        else:  # digamma difference; the span is large, so cancellation is negligible
            out[j] = digamma(s + n + 1.0) - digamma(s + 1.0)
    return out


def _ap_tie_aware(distances, relevant, num_distances):
    """Expected AP over all orders of tied items (McSherry & Najork 2008), full ranking.

    For a tie group of n items (r relevant) preceded by s items (c relevant), a relevant item at
    group position p has expected precision (c + 1 + (p - 1)(r - 1)/(n - 1)) / (s + p), and each
    position holds a relevant item with probability r / n. Summing over p with
    H = sum_p 1/(s+p) and sum_p (p-1)/(s+p) = n - (s+1) H gives the group's expected sum of precisions.
    """
    items, hits = _distance_counts(distances, relevant, num_distances)
    total = hits.sum()
    if total == 0:
        return np.nan
    before = np.concatenate([[0], np.cumsum(items)[:-1]])
    hits_before = np.concatenate([[0], np.cumsum(hits)[:-1]])
    groups = hits > 0
    n, r = items[groups].astype(np.float64), hits[groups].astype(np.float64)
    s, c = before[groups], hits_before[groups].astype(np.float64)
    harmonic = _harmonic_span(s, items[groups])
    rest = n - (s + 1) * harmonic
    spread = np.divide(r - 1, n - 1, out=np.zeros_like(r), where=n > 1)
    expected = (r / n) * ((c + 1) * harmonic + spread * rest)
    return float(expected.sum() / total)


def _relevant_in_top_k(distances, relevant, ks, ties):
    """Relevant items among the top k, for each k in ``ks`` (expected counts for ``ties="average"``)."""
    counts = np.bincount(distances)
    cumulative = np.cumsum(counts)
    found = []
    for k in ks:
        k = min(int(k), distances.shape[0])
        cutoff = int(np.searchsorted(cumulative, k))  # first distance at which k items are reached
        closer = cumulative[cutoff - 1] if cutoff > 0 else 0
        closer_hits = np.count_nonzero(relevant[distances < cutoff])
        at_cutoff = distances == cutoff
        if ties == "average":
            found.append(closer_hits + np.count_nonzero(relevant & at_cutoff) * (k - closer) / counts[cutoff])
        else:
            found.append(closer_hits + np.count_nonzero(relevant[np.flatnonzero(at_cutoff)[: k - closer]]))
    return found


# ---------------------------------------------------------------------------------------------------
# Argument checks shared by the public functions.


def _check_codes_pair(query_codes, database_codes):
    query_codes = _validation.check_codes(query_codes, "query_codes")
    database_codes = _validation.check_codes(database_codes, "database_codes")
    _validation.check_same_width(query_codes, database_codes)
    if query_codes.shape[0] == 0:
        raise ValueError("`query_codes` must hold at least one query, got 0 (a mean over no queries is undefined).")
    if database_codes.shape[0] == 0:
        raise ValueError("`database_codes` must hold at least one code, got 0.")
    return query_codes, database_codes


def _check_labelled(labels, name):
    """Refuses unlabelled items, which the two label forms would otherwise score differently."""
    unlabelled = ~labels.any(axis=1) if labels.ndim == 2 else (labels < 0 if labels.dtype.kind in "if" else None)
    if unlabelled is not None and unlabelled.any():
        first = int(np.flatnonzero(unlabelled)[0])
        form = "all-zero multi-hot rows" if labels.ndim == 2 else "negative class ids (-1 = unlabelled)"
        raise ValueError(f"`{name}` must label every item, got {int(unlabelled.sum())} unlabelled ({form}; first at "
                         f"row {first}); evaluate the labelled items only, e.g. codes[keep], labels[keep].")


def _label_inputs(query_codes, database_codes, query_labels, database_labels):
    query_codes, database_codes = _check_codes_pair(query_codes, database_codes)
    query_labels = _validation.check_labels(query_labels, "query_labels", query_codes.shape[0], "query_codes")
    database_labels = _validation.check_labels(
        database_labels, "database_labels", database_codes.shape[0], "database_codes"
    )
    _validation.check_matching_labels(query_labels, database_labels)
    _check_labelled(query_labels, "query_labels")
    _check_labelled(database_labels, "database_labels")
    return query_codes, database_codes, lambda: _LabelRelevance(query_labels, database_labels)


def _ground_truth_inputs(query_codes, database_codes, ground_truth):
    query_codes, database_codes = _check_codes_pair(query_codes, database_codes)
    ground_truth = np.asarray(ground_truth)
    if ground_truth.ndim != 2 or ground_truth.dtype.kind not in "iu":
        raise ValueError(
            "`ground_truth` must be a 2-D integer array of database ids [queries, N] "
            f"(see euclidean_ground_truth), got dtype {ground_truth.dtype} and shape {ground_truth.shape}."
        )
    if ground_truth.shape[0] != query_codes.shape[0]:
        raise ValueError(
            f"`ground_truth` must have one row per query ({query_codes.shape[0]}), got {ground_truth.shape[0]}."
        )
    if ground_truth.size and (ground_truth.min() < 0 or ground_truth.max() >= database_codes.shape[0]):
        raise ValueError(
            f"`ground_truth` ids must lie in [0, {database_codes.shape[0]}), got values in "
            f"[{ground_truth.min()}, {ground_truth.max()}]."
        )
    size = database_codes.shape[0]
    return query_codes, database_codes, lambda: _NeighbourRelevance(ground_truth, size)


def _check_k(k, name="k"):
    """Accepts one positive int or a sequence of them; returns (array of ks, was_scalar)."""
    scalar = np.ndim(k) == 0
    ks = np.atleast_1d(np.asarray(k))
    if ks.size == 0 or ks.dtype.kind not in "iu" or np.any(ks < 1):
        raise ValueError(f"`{name}` must be a positive integer or a sequence of them, got {k!r}.")
    return ks.astype(np.int64), scalar


def _mean(values, zero_relevance):
    if zero_relevance == "drop":
        values = values[~np.isnan(values)]
        return float(values.mean()) if values.size else 0.0
    return float(np.nan_to_num(values, nan=0.0).mean())


def _average_precisions(query_codes, database_codes, make_relevance, top_k, ties, n_jobs):
    _validation.check_choice(ties, "ties", _TIES)
    if top_k is not None:
        top_k = _validation.check_positive_int(top_k, "top_k")
        if ties == "average":
            raise ValueError(
                "`ties='average'` (tie-aware AP) is defined here for the full ranking only; "
                f"got top_k={top_k}. Use ties='index' with top_k, or top_k=None."
            )
    if ties == "average":
        num_distances = 8 * query_codes.shape[1] + 1
        kernel = lambda d, rel: _ap_tie_aware(d, rel, num_distances)  # noqa: E731
    else:
        kernel = lambda d, rel: _ap_index_ties(d, rel, top_k)  # noqa: E731
    return _map_queries(query_codes, database_codes, make_relevance, kernel, n_jobs)


# ---------------------------------------------------------------------------------------------------
# Label-based retrieval metrics.


def average_precision(query_codes: ArrayLike, database_codes: ArrayLike, query_labels: ArrayLike,
                      database_labels: ArrayLike, *, top_k: int | None = None, ties: str = "index",
                      n_jobs: int | None = None) -> np.ndarray:
    """Per-query average precision (AP, or AP@top_k); NaN where nothing relevant was ranked.

    Args:
        query_codes, database_codes: packed uint8 codes of equal width (``tfhash.codes``).
        query_labels, database_labels: 1-D class ids, or 2-D 0/1 multi-hot (shared label = relevant).
        top_k: rank only the first ``top_k`` database items (AP@R); ``None`` ranks everything.
        ties: ``"index"`` (ascending database index) or ``"average"`` (tie-aware expectation).
        n_jobs: worker threads; ``None`` uses every core for large inputs.

    Returns:
        float64 array ``[n_query]``.
    """
    query_codes, database_codes, relevance = _label_inputs(
        query_codes, database_codes, query_labels, database_labels)
    return _average_precisions(query_codes, database_codes, relevance, top_k, ties, n_jobs)


def mean_average_precision(query_codes: ArrayLike, database_codes: ArrayLike, query_labels: ArrayLike,
                           database_labels: ArrayLike, *, top_k: int | None = None, ties: str = "index",
                           zero_relevance: str = "zero", n_jobs: int | None = None) -> float:
    """Mean average precision over the queries (mAP, or mAP@top_k).

    AP = (1 / m) * sum_{j=1..m} j / rank_j, where rank_j is the rank of the j-th relevant item and m
    the number of relevant items ranked (the whole database, or the top ``top_k``).
    Queries with m = 0 count as 0 (``zero_relevance="zero"``) or are dropped (``"drop"``).
    See :func:`average_precision` for the arguments.
    """
    _validation.check_choice(zero_relevance, "zero_relevance", _ZERO_RELEVANCE)
    values = average_precision(query_codes, database_codes, query_labels, database_labels,
                               top_k=top_k, ties=ties, n_jobs=n_jobs)
    return _mean(values, zero_relevance)


def _mean_precision_at_k(query_codes, database_codes, make_relevance, k, ties, n_jobs):
    """Precision@k averaged over the queries, for any relevance (labels or true neighbours)."""
    _, scalar, precision, _ = _precision_recall_at_k(query_codes, database_codes, make_relevance, k, ties, n_jobs)
    curve = precision.mean(axis=0)
    return float(curve[0]) if scalar else curve


def _precision_recall_at_k(query_codes, database_codes, make_relevance, k, ties, n_jobs):
    ks, scalar = _check_k(k)
    _validation.check_choice(ties, "ties", _TIES)

    def kernel(distances, relevant):
        return _relevant_in_top_k(distances, relevant, ks, ties) + [np.count_nonzero(relevant)]

    found = _map_queries(query_codes, database_codes, make_relevance, kernel, n_jobs)
    retrieved = np.minimum(ks, database_codes.shape[0])
    precision = found[:, :-1] / retrieved
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = found[:, :-1] / found[:, -1:]  # NaN where nothing is relevant
    return ks, scalar, precision, recall


def precision_at_k(query_codes: ArrayLike, database_codes: ArrayLike, query_labels: ArrayLike,
                   database_labels: ArrayLike, k: int | Sequence[int], *, ties: str = "index",
                   n_jobs: int | None = None) -> float | np.ndarray:
    """Mean precision@k: relevant items among the first k ranked, over min(k, database size).

    ``k`` may be a sequence, giving the precision over the top-k curve (an array, one value per k).
    """
    query_codes, database_codes, relevance = _label_inputs(
        query_codes, database_codes, query_labels, database_labels)
    return _mean_precision_at_k(query_codes, database_codes, relevance, k, ties, n_jobs)


def recall_at_k(query_codes: ArrayLike, database_codes: ArrayLike, query_labels: ArrayLike,
                database_labels: ArrayLike, k: int | Sequence[int], *, ties: str = "index",
                zero_relevance: str = "zero", n_jobs: int | None = None) -> float | np.ndarray:
    """Mean recall@k: relevant items among the first k ranked, over all relevant items of the query.

    ``k`` may be a sequence (one value per k). Queries with nothing relevant count 0 or are dropped.
    """
    _validation.check_choice(zero_relevance, "zero_relevance", _ZERO_RELEVANCE)
    query_codes, database_codes, relevance = _label_inputs(
        query_codes, database_codes, query_labels, database_labels)
    _, scalar, _, recall = _precision_recall_at_k(query_codes, database_codes, relevance, k, ties, n_jobs)
    curve = np.array([_mean(recall[:, j], zero_relevance) for j in range(recall.shape[1])])
    return float(curve[0]) if scalar else curve


def precision_at_top_k_curve(query_codes: ArrayLike, database_codes: ArrayLike, query_labels: ArrayLike,
                             database_labels: ArrayLike, ks: Sequence[int] | None = None, *,
                             ties: str = "index", n_jobs: int | None = None) -> tuple:
    """Precision over the top-k curve: ``(ks, precision)``; default ks 1, 100, 200, ... up to 1000."""
    if ks is None:
        ks = [1] + list(range(100, 1001, 100))
    ks, _ = _check_k(ks, "ks")
    return ks, np.atleast_1d(precision_at_k(query_codes, database_codes, query_labels, database_labels,
                                            list(ks), ties=ties, n_jobs=n_jobs))


def _radius_counts(query_codes, database_codes, make_relevance, n_jobs):
    """Per query: cumulative (retrieved, relevant retrieved) at each radius 0..bits, plus relevant total."""
    num_distances = 8 * query_codes.shape[1] + 1

    def kernel(distances, relevant):
        items, hits = _distance_counts(distances, relevant, num_distances)
        return np.concatenate([np.cumsum(items), np.cumsum(hits)])

    counts = _map_queries(query_codes, database_codes, make_relevance, kernel, n_jobs)
    return counts[:, :num_distances], counts[:, num_distances:]


def precision_within_radius(query_codes: ArrayLike, database_codes: ArrayLike, query_labels: ArrayLike,
                            database_labels: ArrayLike, radius: int = 2, *,
                            n_jobs: int | None = None) -> RadiusPrecision:
    """Mean precision of the Hamming ball of ``radius`` (distance <= radius, inclusive).

    A query whose ball is empty scores 0. Returns ``RadiusPrecision(precision, empty_queries)``.
    """
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise ValueError(f"`radius` must be a non-negative integer, got {radius!r}.")
    query_codes, database_codes, relevance = _label_inputs(
        query_codes, database_codes, query_labels, database_labels)
    retrieved, hits = _radius_counts(query_codes, database_codes, relevance, n_jobs)
    r = min(int(radius), retrieved.shape[1] - 1)
    found, relevant = retrieved[:, r], hits[:, r]
    precision = np.divide(relevant, found, out=np.zeros_like(relevant), where=found > 0)
    return RadiusPrecision(float(precision.mean()), int(np.count_nonzero(found == 0)))


def precision_recall_curve(query_codes: ArrayLike, database_codes: ArrayLike, query_labels: ArrayLike,
                           database_labels: ArrayLike, *, n_jobs: int | None = None) -> PrecisionRecallCurve:
    """Precision and recall of Hamming balls of radius 0..bits, averaged over the queries.

    Precision of an empty ball is 0 (as in :func:`precision_within_radius`); recall of a query with
    nothing relevant is 0. Returns ``PrecisionRecallCurve(radius, precision, recall)``.
    """
    query_codes, database_codes, relevance = _label_inputs(
        query_codes, database_codes, query_labels, database_labels)
    retrieved, hits = _radius_counts(query_codes, database_codes, relevance, n_jobs)
    total = hits[:, -1:]
    precision = np.divide(hits, retrieved, out=np.zeros_like(hits), where=retrieved > 0)
    recall = np.divide(hits, total, out=np.zeros_like(hits), where=total > 0)
    return PrecisionRecallCurve(np.arange(retrieved.shape[1]), precision.mean(axis=0), recall.mean(axis=0))


# ---------------------------------------------------------------------------------------------------
# Euclidean-ground-truth ANN protocol.


def euclidean_ground_truth(query_features: ArrayLike, database_features: ArrayLike, n: int = 1000, *,
                           chunk_size: int = 1 << 24) -> np.ndarray:
    """Ids of each query's ``n`` nearest database items by Euclidean distance, nearest first.

    Distances are computed in blocks of at most ``chunk_size`` entries; ties by ascending id.
    Returns int64 ``[n_query, min(n, database size)]``.
    """
    query = _validation.check_features(query_features, "query_features", ndim=2).astype(np.float64)
    database = _validation.check_features(database_features, "database_features", ndim=2).astype(np.float64)
    if query.shape[1] != database.shape[1]:
        raise ValueError(
            f"`query_features` and `database_features` must have the same dimension, got "
            f"{query.shape[1]} and {database.shape[1]}."
        )
    n = min(_validation.check_positive_int(n, "n"), database.shape[0])
    database_sq = np.einsum("ij,ij->i", database, database)
    rows = max(1, chunk_size // database.shape[0])
    out = np.empty((query.shape[0], n), dtype=np.int64)
    for start in range(0, query.shape[0], rows):
        block = query[start:start + rows]
        # ||q - x||^2 without the ||q||^2 term, which does not change the order within a row.
        dist = database_sq[None, :] - 2.0 * block @ database.T
        part = np.argpartition(dist, n - 1, axis=1)[:, :n] if n < database.shape[0] else \
            np.tile(np.arange(database.shape[0]), (block.shape[0], 1))
        part.sort(axis=1)  # ascending id first, so the stable sort below breaks ties by id
        order = np.argsort(np.take_along_axis(dist, part, axis=1), axis=1, kind="stable")
        out[start:start + rows] = np.take_along_axis(part, order, axis=1)
    return out


def ann_mean_average_precision(query_codes: ArrayLike, database_codes: ArrayLike, ground_truth: ArrayLike, *,
                               top_k: int | None = None, ties: str = "index", zero_relevance: str = "zero",
                               n_jobs: int | None = None) -> float:
    """mAP where the relevant items of query i are ``ground_truth[i]`` (its true Euclidean neighbours)."""
    _validation.check_choice(zero_relevance, "zero_relevance", _ZERO_RELEVANCE)
    query_codes, database_codes, relevance = _ground_truth_inputs(query_codes, database_codes, ground_truth)
    values = _average_precisions(query_codes, database_codes, relevance, top_k, ties, n_jobs)
    return _mean(values, zero_relevance)


def ann_precision_at_k(query_codes: ArrayLike, database_codes: ArrayLike, ground_truth: ArrayLike,
                       k: int | Sequence[int], *, ties: str = "index", n_jobs: int | None = None) -> float | np.ndarray:
    """Precision@k against the true-neighbour ground truth (``k`` may be a sequence)."""
    query_codes, database_codes, relevance = _ground_truth_inputs(query_codes, database_codes, ground_truth)
    return _mean_precision_at_k(query_codes, database_codes, relevance, k, ties, n_jobs)


def ann_recall_at_k(query_codes: ArrayLike, database_codes: ArrayLike, ground_truth: ArrayLike, k: int | Sequence[int],
                    *, ties: str = "index", n_jobs: int | None = None) -> float | np.ndarray:
    """Recall@k: fraction of the true neighbours found among the first k (``k`` may be a sequence)."""
    query_codes, database_codes, relevance = _ground_truth_inputs(query_codes, database_codes, ground_truth)
    _, scalar, _, recall = _precision_recall_at_k(query_codes, database_codes, relevance, k, ties, n_jobs)
    curve = np.nan_to_num(recall, nan=0.0).mean(axis=0)
    return float(curve[0]) if scalar else curve


# ---------------------------------------------------------------------------------------------------
# Clustering (HashGAN Table 3).


def clustering_accuracy(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """ACC: fraction of items whose cluster maps to their class under the best one-to-one mapping.

    The mapping maximises the number of matches (Hungarian algorithm on the contingency table).
    """
    from scipy.optimize import linear_sum_assignment

    labels_true, labels_pred = np.asarray(labels_true).ravel(), np.asarray(labels_pred).ravel()
    if labels_true.shape != labels_pred.shape or labels_true.size == 0:
        raise ValueError(
            "`labels_true` and `labels_pred` must be non-empty and of equal length, got "
            f"{labels_true.shape[0]} and {labels_pred.shape[0]}."
        )
    classes, true_ids = np.unique(labels_true, return_inverse=True)
    clusters, pred_ids = np.unique(labels_pred, return_inverse=True)
    table = np.zeros((clusters.size, classes.size), dtype=np.int64)
    np.add.at(table, (pred_ids, true_ids), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / labels_true.size)


def kmeans_scores(codes: ArrayLike, labels: ArrayLike, *, bits: int, n_clusters: int | None = None, seed: int = 0,
                  n_init: int = 10) -> dict:
    """k-means on the {0, 1} bits of packed codes; returns ``{"nmi": ..., "acc": ...}``.

    ``n_clusters`` defaults to the number of distinct labels (HashGAN Sec. 4.3 uses k = classes).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    codes = _validation.check_codes(codes, "codes", bits=bits)
    labels = _validation.check_labels(labels, "labels", codes.shape[0], "codes")
    if labels.ndim != 1:
        raise ValueError(f"`labels` must be 1-D class ids for clustering, got shape {labels.shape}.")
    k = np.unique(labels).size if n_clusters is None else _validation.check_positive_int(n_clusters, "n_clusters")
    points = codes_lib.unpack(codes, bits).astype(np.float32)
    predicted = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(points)
    return {
        "nmi": float(normalized_mutual_info_score(labels, predicted)),
        "acc": clustering_accuracy(labels, predicted),
    }
