"""Known-answer tests: every case is small enough to check by hand; the arithmetic is in comments."""

import numpy as np
import pytest

from tests.helpers import pack_rows
from tfhash import codes, metrics

# One query 0000 and four database codes. Distances from the query: idx0 1, idx1 0, idx2 2, idx3 1.
# Relevant (same label 7): idx0 and idx2.
# Ranking with ties by index: idx1 (d0, no), idx0 (d1, yes), idx3 (d1, no), idx2 (d2, yes).
QUERY = pack_rows([[0, 0, 0, 0]])
DATABASE = pack_rows([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [0, 1, 0, 0]])
QUERY_LABELS = np.array([7])
DATABASE_LABELS = np.array([7, 3, 7, 3])
CASE = (QUERY, DATABASE, QUERY_LABELS, DATABASE_LABELS)


def test_map_full_ranking_ties_by_index():
    # Relevant at ranks 2 and 4: AP = (1/2) * (1/2 + 2/4) = 0.5
    assert metrics.mean_average_precision(*CASE) == pytest.approx(0.5, abs=1e-12)


def test_map_at_r():
    # Top 2 = idx1, idx0: one relevant, at rank 2. AP@2 = (1/1) * (1/2) = 0.5
    assert metrics.mean_average_precision(*CASE, top_k=2) == pytest.approx(0.5, abs=1e-12)
    # Top 3 adds idx3 (not relevant): still one relevant at rank 2 -> 0.5
    assert metrics.mean_average_precision(*CASE, top_k=3) == pytest.approx(0.5, abs=1e-12)


def test_zero_relevance_counts_zero_or_is_dropped():
    # Top 1 = idx1 (not relevant): AP@1 has no relevant item -> 0 by default.
    assert metrics.mean_average_precision(*CASE, top_k=1) == 0.0
    # Add a second query (label 9, nothing relevant anywhere) to the full-ranking case:
    # counted as 0 -> mean (0.5 + 0) / 2 = 0.25; dropped -> 0.5.
    q = pack_rows([[0, 0, 0, 0], [1, 1, 1, 1]])
    labels = np.array([7, 9])
    assert metrics.mean_average_precision(q, DATABASE, labels, DATABASE_LABELS) == pytest.approx(0.25)
    assert metrics.mean_average_precision(q, DATABASE, labels, DATABASE_LABELS,
                                          zero_relevance="drop") == pytest.approx(0.5)


def test_tie_aware_average_precision():
    # Groups by distance: d0 {idx1: 0 relevant}, d1 {idx0 yes, idx3 no}, d2 {idx2 yes}.
    # d1 occupies ranks 2-3 with one relevant item in random order: expected precision
    #   (1/2) * (1/2 + 1/3) = 5/12.
    # d2 at rank 4, one relevant before it: precision (1 + 1) / 4 = 1/2.
    # Expected AP = (5/12 + 6/12) / 2 = 11/24.
    assert metrics.mean_average_precision(*CASE, ties="average") == pytest.approx(11 / 24, abs=1e-12)


def test_tie_aware_equals_mean_over_all_tie_orders(rng):
    # Brute force: average the index-tie AP over every permutation of a database with big tie groups.
    import itertools

    db_bits = rng.integers(0, 2, (6, 3), dtype=np.uint8)
    db = codes.pack(db_bits)
    q = codes.pack(np.zeros((1, 3), np.uint8))
    labels = np.array([1, 0, 1, 1, 0, 0])
    aps = [metrics.mean_average_precision(q, db[list(p)], [1], labels[list(p)])
           for p in itertools.permutations(range(6))]
    assert metrics.mean_average_precision(q, db, [1], labels, ties="average") == pytest.approx(np.mean(aps))


def test_tie_aware_large_groups_use_harmonic_numbers(rng):
    # 10,000 items with 2 bits: tie groups far larger than the direct-sum limit (4,096).
    db = codes.pack(rng.integers(0, 2, (10000, 2), dtype=np.uint8))
    labels = rng.integers(0, 3, 10000)
    q = codes.pack(np.zeros((1, 2), np.uint8))
    d = codes.hamming_distance(q, db)[0]
    rel = labels == 1
    # Reference: exact per-position sum of the expected-precision formula.
    total, before, hits_before = 0.0, 0, 0
    for dist in range(3):
        n, r = int((d == dist).sum()), int(rel[d == dist].sum())
        p = np.arange(1, n + 1)
        spread = (r - 1) / (n - 1) if n > 1 else 0.0
        total += (r / n) * np.sum((hits_before + 1 + (p - 1) * spread) / (before + p))
        before, hits_before = before + n, hits_before + r
    expected = total / rel.sum()
    assert metrics.mean_average_precision(q, db, [1], labels, ties="average") == pytest.approx(expected, rel=1e-10)


def test_precision_and_recall_at_k():
    # Top 3 = idx1 (no), idx0 (yes), idx3 (no): precision@3 = 1/3, recall@3 = 1/2 (2 relevant overall).
    assert metrics.precision_at_k(*CASE, 3) == pytest.approx(1 / 3)
    assert metrics.recall_at_k(*CASE, 3) == pytest.approx(1 / 2)
    # k beyond the database: precision over the 4 items = 2/4, recall = 1.
    assert metrics.precision_at_k(*CASE, 10) == pytest.approx(0.5)
    assert metrics.recall_at_k(*CASE, 10) == pytest.approx(1.0)
    # A sequence of ks gives the precision over the top-k curve: k=1 -> 0/1, k=2 -> 1/2, k=4 -> 2/4.
    np.testing.assert_allclose(metrics.precision_at_k(*CASE, [1, 2, 4]), [0.0, 0.5, 0.5])
    ks, curve = metrics.precision_at_top_k_curve(*CASE, ks=[1, 2])
    np.testing.assert_allclose(curve, [0.0, 0.5])


def test_precision_at_k_tie_aware():
    # k=2: idx1 (d0) for sure, then one of the d1 group {idx0 yes, idx3 no}: expected 1/2 relevant.
    # precision@2 = (0 + 1/2) / 2 = 1/4 (index ties give idx0 -> 1/2).
    assert metrics.precision_at_k(*CASE, 2, ties="average") == pytest.approx(0.25)
    assert metrics.precision_at_k(*CASE, 2) == pytest.approx(0.5)


def test_precision_within_radius_inclusive_and_empty_balls():
    # Query 0000: r=0 -> {idx1}: 0/1; r=1 -> {idx1, idx0, idx3}: 1/3; r=2 -> all: 2/4.
    assert metrics.precision_within_radius(*CASE, radius=0) == (0.0, 0)
    assert metrics.precision_within_radius(*CASE, radius=1).precision == pytest.approx(1 / 3)
    assert metrics.precision_within_radius(*CASE, radius=2).precision == pytest.approx(0.5)
    # Add query 1111 (label 7): distances idx0 3, idx1 4, idx2 2, idx3 3; its r=1 ball is empty -> 0.
    # Mean at r=1: (1/3 + 0) / 2 = 1/6, with one empty ball.
    q = pack_rows([[0, 0, 0, 0], [1, 1, 1, 1]])
    result = metrics.precision_within_radius(q, DATABASE, [7, 7], DATABASE_LABELS, radius=1)
    assert result.precision == pytest.approx(1 / 6)
    assert result.empty_queries == 1


def test_precision_recall_curve_over_radii():
    # Cumulative retrieved at r=0..4: 1, 3, 4, 4, 4; relevant retrieved: 0, 1, 2, 2, 2; 2 relevant.
    curve = metrics.precision_recall_curve(*CASE)
    np.testing.assert_array_equal(curve.radius, [0, 1, 2, 3, 4, 5, 6, 7, 8])  # 4 bits pack to 8
    np.testing.assert_allclose(curve.precision[:5], [0, 1 / 3, 1 / 2, 1 / 2, 1 / 2])
    np.testing.assert_allclose(curve.recall[:5], [0, 1 / 2, 1, 1, 1])


def test_multilabel_relevance_is_any_shared_label():
    # Query labels {0, 2}; database {0}, {1}, {2}, {1, 2} -> relevant idx0, idx2, idx3.
    # Ranking idx1 (no), idx0 (yes), idx3 (yes), idx2 (yes): AP = (1/2 + 2/3 + 3/4) / 3 = 23/36.
    q_labels = np.array([[1, 0, 1]])
    db_labels = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1]])
    assert metrics.mean_average_precision(QUERY, DATABASE, q_labels, db_labels) == pytest.approx(23 / 36)


def test_euclidean_ground_truth_and_ann_metrics():
    # 1-D features: database 0, 10, 1, 5; query 0.2 -> distances 0.2, 9.8, 0.8, 4.8.
    # Its 2 true neighbours are idx0 then idx2.
    gt = metrics.euclidean_ground_truth([[0.2]], [[0.0], [10.0], [1.0], [5.0]], n=2)
    assert gt.tolist() == [[0, 2]]
    # Codes rank idx1, idx0, idx3, idx2 (as above) and the relevant set {0, 2} is the same as the
    # label case, so mAP = 0.5, precision@3 = 1/3, recall@3 = 1/2.
    assert metrics.ann_mean_average_precision(QUERY, DATABASE, gt) == pytest.approx(0.5)
    assert metrics.ann_precision_at_k(QUERY, DATABASE, gt, 3) == pytest.approx(1 / 3)
    np.testing.assert_allclose(metrics.ann_recall_at_k(QUERY, DATABASE, gt, [1, 2, 4]), [0.0, 0.5, 1.0])


def test_euclidean_ground_truth_matches_brute_force_and_chunks(rng):
    q, db = rng.standard_normal((7, 5)), rng.standard_normal((300, 5))
    full = np.linalg.norm(q[:, None] - db[None], axis=-1)
    expected = np.argsort(full, axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(metrics.euclidean_ground_truth(q, db, n=20, chunk_size=600), expected)


def test_clustering_accuracy_uses_best_one_to_one_mapping():
    # Clusters 1 -> class 0 (2 items), 0 -> class 1 (2), 2 -> class 2 (1); item 4 is wrong: ACC 5/6.
    assert metrics.clustering_accuracy([0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 0, 2]) == pytest.approx(5 / 6)


def test_kmeans_scores_on_perfectly_separated_codes():
    # Three classes with codes 00000000, 11110000, 00001111 (+ one flipped bit): k-means finds the
    # classes exactly -> NMI 1 and ACC 1.
    base = np.array([[0] * 8, [1] * 4 + [0] * 4, [0] * 4 + [1] * 4], np.uint8)
    bits = np.repeat(base, 5, axis=0)
    bits[::5, 0] ^= 1
    labels = np.repeat([0, 1, 2], 5)
    scores = metrics.kmeans_scores(codes.pack(bits), labels, bits=8)
    assert scores["nmi"] == pytest.approx(1.0)
    assert scores["acc"] == pytest.approx(1.0)


def _naive_map(q, db, ql, dl, top_k=None):
    """Straightforward reference: per query, a stable argsort of the distances."""
    d = codes.hamming_distance(q, db).astype(np.int64)
    aps = []
    for i in range(q.shape[0]):
        order = np.argsort(d[i], kind="stable")[:top_k]
        rel = dl[order] == ql[i]
        ranks = np.flatnonzero(rel) + 1
        aps.append(np.mean(np.arange(1, ranks.size + 1) / ranks) if ranks.size else 0.0)
    return float(np.mean(aps))


@pytest.mark.parametrize("bits", [8, 16, 24, 64])
@pytest.mark.parametrize("top_k", [None, 50])
def test_map_matches_naive_reference(rng, bits, top_k):
    q = codes.pack(rng.integers(0, 2, (40, bits), dtype=np.uint8))
    db = codes.pack(rng.integers(0, 2, (700, bits), dtype=np.uint8))
    ql, dl = rng.integers(0, 5, 40), rng.integers(0, 5, 700)
    expected = _naive_map(q, db, ql, dl, top_k)
    for n_jobs in (1, 2):
        got = metrics.mean_average_precision(q, db, ql, dl, top_k=top_k, n_jobs=n_jobs)
        assert got == pytest.approx(expected, abs=1e-12)


def test_bad_inputs_are_refused_with_clear_errors():
    with pytest.raises(ValueError, match="`query_codes` must be packed codes of dtype uint8.*float"):
        metrics.mean_average_precision(QUERY.astype(float), DATABASE, QUERY_LABELS, DATABASE_LABELS)
    with pytest.raises(ValueError, match="same code width, got 1 and 2 bytes"):
        metrics.mean_average_precision(QUERY, np.zeros((4, 2), np.uint8), QUERY_LABELS, DATABASE_LABELS)
    with pytest.raises(ValueError,
                       match="`database_labels` must have one row per item of `database_codes` \\(4\\), got 3"):
        metrics.mean_average_precision(QUERY, DATABASE, QUERY_LABELS, DATABASE_LABELS[:3])
    with pytest.raises(ValueError, match="`top_k` must be a positive integer"):
        metrics.mean_average_precision(*CASE, top_k=0)
    with pytest.raises(ValueError, match="`ties` must be one of"):
        metrics.mean_average_precision(*CASE, ties="random")
    with pytest.raises(ValueError, match="full ranking only"):
        metrics.mean_average_precision(*CASE, top_k=2, ties="average")
    with pytest.raises(ValueError, match="`codes` must be 2 bytes wide for bits=16.*got 1 bytes"):
        metrics.kmeans_scores(DATABASE, DATABASE_LABELS, bits=16)
    with pytest.raises(ValueError, match="`query_features` must be finite, got 1 NaN/inf"):
        metrics.euclidean_ground_truth([[np.nan]], [[0.0]], n=1)
    with pytest.raises(ValueError, match="`radius` must be a non-negative integer"):
        metrics.precision_within_radius(*CASE, radius=-1)


def test_a_label_column_is_class_ids_and_non_binary_multi_hot_is_refused():
    query = pack_rows([[0, 0, 0, 0], [1, 1, 1, 1]])
    database = pack_rows([[0, 0, 0, 1], [1, 1, 1, 0], [0, 0, 1, 1]])
    ids_q, ids_db = np.array([1, 2]), np.array([1, 2, 3])
    expected = metrics.mean_average_precision(query, database, ids_q, ids_db)
    column = metrics.mean_average_precision(query, database, ids_q[:, None], ids_db[:, None])
    assert column == expected
    with pytest.raises(ValueError, match="0/1 multi-hot rows"):
        metrics.mean_average_precision(query, database, np.array([[1, 2], [0, 3]]), np.array([[1, 0], [2, 0], [0, 1]]))


def _metric_calls(query_codes, database_codes, query_labels, database_labels):
    return {
        "mean_average_precision": lambda: metrics.mean_average_precision(
            query_codes, database_codes, query_labels, database_labels),
        "precision_at_k": lambda: metrics.precision_at_k(query_codes, database_codes, query_labels, database_labels, 2),
        "precision_within_radius": lambda: metrics.precision_within_radius(
            query_codes, database_codes, query_labels, database_labels, radius=1),
    }


def test_labels_of_two_kinds_are_refused():
    q, db = pack_rows([[0, 0, 0, 0]]), pack_rows([[0, 0, 0, 0], [1, 1, 1, 1]])
    for call in _metric_calls(q, db, np.array([1]), np.array(["1", "2"])).values():
        with pytest.raises(ValueError, match="labels of one kind, got numbers and strings"):
            call()
    assert metrics.mean_average_precision(q, db, np.array(["a"]), np.array(["a", "b"])) == 1.0  # strings alike


def test_unlabelled_items_are_refused_alike_as_class_ids_and_multi_hot_rows():
    q, db = pack_rows([[0, 0, 0, 0], [1, 1, 1, 1]]), pack_rows([[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]])
    ids_q, ids_db = np.array([0, -1]), np.array([0, 1, -1])
    hot_q, hot_db = np.array([[1, 0], [0, 0]]), np.array([[1, 0], [0, 1], [0, 0]])
    for labels in ((ids_q, ids_db), (hot_q, hot_db)):
        for call in _metric_calls(q, db, *labels).values():
            with pytest.raises(ValueError, match=r"`query_labels` must label every item, got 1 unlabelled.*row 1"):
                call()
    keep = ids_q >= 0  # the labelled queries alone score the same in both forms
    for call in _metric_calls(q[keep], db, ids_q[keep], ids_db).values():
        with pytest.raises(ValueError, match=r"`database_labels` must label every item, got 1 unlabelled.*row 2"):
            call()
    a = metrics.mean_average_precision(q[keep], db[:2], ids_q[keep], ids_db[:2])
    b = metrics.mean_average_precision(q[keep], db[:2], hot_q[keep], hot_db[:2])
    assert a == b == 1.0


def test_zero_queries_are_refused_by_every_metric():
    db = pack_rows([[0, 0, 0, 0], [1, 1, 1, 1]])
    for call in _metric_calls(np.zeros((0, 1), np.uint8), db, np.zeros(0, int), np.array([0, 1])).values():
        with pytest.raises(ValueError, match="`query_codes` must hold at least one query, got 0"):
            call()


def test_split_scorer_scores_by_labels_or_by_true_euclidean_neighbours():
    from tfhash import datasets, evaluation

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 50)
    x = (y[:, None] * 10.0 + rng.normal(size=(200, 3))).astype(np.float32)
    split = datasets.make_split(x, y, queries_per_class=5, validation_per_class=5, seed=0)

    def by_class(items):  # one code per class: every same-class item at distance 0, every other farther
        return np.packbits(np.eye(8, dtype=bool)[np.round(items[:, 0] / 10).astype(int)], axis=1)

    labels = evaluation.SplitScorer(split)
    assert labels(by_class) == pytest.approx(1.0)
    figure, details = labels(by_class, bits=8)
    assert figure == pytest.approx(1.0) and details["mAP@1000"] == pytest.approx(1.0)
    assert details["precision@100"] == pytest.approx(45 / 100)  # 45 database items per class
    assert details["kmeans_nmi"] > 0.99
    assert evaluation.SplitScorer(split.validation())(by_class) == pytest.approx(1.0)
    # Without labels: the true top-N Euclidean neighbours (N: a tenth of a small database) are the relevant ones;
    # codes that keep only the class cannot rank within it.
    euclidean = evaluation.SplitScorer(split, protocol="euclidean")
    assert euclidean.truth.shape == (len(split.query_x), len(split.database_x) // 10)
    assert 0.0 < euclidean(by_class) < 1.0 and set(euclidean(by_class, bits=8)[1]) == {"precision@100"}
    with pytest.raises(ValueError, match="`protocol` must be one of"):
        evaluation.SplitScorer(split, protocol="cosine")
