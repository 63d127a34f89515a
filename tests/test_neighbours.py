"""The neighbourhood structure of BGAN (Alg. 1): first ranking, expansion, sparse storage, bad input."""

import numpy as np
import pytest

from tfhash import neighbours


def _brute_force_knn(x, k):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def _alg1(first, k2):
    """Alg. 1's expansion written directly: overlap with every other list, top K2, union of their lists."""
    n = first.shape[0]
    sets = [set(row.tolist()) for row in first]
    lists = []
    for i in range(n):
        overlap = np.array([len(sets[i] & sets[j]) if j != i else -1 for j in range(n)])
        order = np.argsort(-overlap, kind="stable")
        top = [j for j in order[:k2] if overlap[j] > 0]
        final = set(sets[i]).union(*[sets[j] for j in top]) - {i}
        lists.append(sorted(final))
    return lists


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_first_ranking_is_the_cosine_nearest_neighbours_without_the_item(rng, backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    x = rng.normal(size=(300, 12)).astype(np.float32)
    found = neighbours.cosine_knn(x, 7, backend=backend, block_size=64)
    assert found.shape == (300, 7) and found.dtype == np.int32
    assert not np.any(found == np.arange(300)[:, None])
    np.testing.assert_array_equal(found, _brute_force_knn(x, 7))


def test_expansion_matches_algorithm_1_written_out(rng):
    x = rng.normal(size=(120, 6)).astype(np.float32)
    graph = neighbours.neighbourhood_graph(x, k1=5, k2=4, backend="numpy")
    expected = _alg1(_brute_force_knn(x, 5), 4)
    # Ties in overlap may pick other items of equal overlap; compare where the K2-th overlap is unique.
    first = _brute_force_knn(x, 5)
    sets = [set(r) for r in first]
    checked = 0
    for i in range(120):
        overlap = sorted((len(sets[i] & sets[j]) for j in range(120) if j != i), reverse=True)
        if overlap[3] > overlap[4]:
            assert graph.neighbours(i).tolist() == expected[i], i
            checked += 1
        assert set(first[i]) <= set(graph.neighbours(i).tolist()) and i not in graph.neighbours(i)
    assert checked >= 15
    assert np.all(np.diff(graph.indptr) >= 5)


def test_pair_keys_answer_membership_and_labels_measure_purity():
    # Two tight clusters of directions: every neighbour list stays inside its cluster.
    angles = np.concatenate([np.linspace(0, 0.2, 10), np.linspace(2.0, 2.2, 10)])
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    graph = neighbours.neighbourhood_graph(x, k1=3, k2=2)
    keys = graph.pair_keys()
    assert np.all(np.diff(keys) > 0)
    labels = np.repeat([0, 1], 10)
    assert graph.same_label_fraction(labels) == 1.0
    members = set(keys.tolist())
    for i in range(20):
        for j in range(20):
            assert ((i * 20 + j) in members) == (j in graph.neighbours(i).tolist())


def test_bad_input_is_named_before_any_work(rng):
    x = rng.normal(size=(10, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"`k1` must be smaller than the number of training items \(10\), got 10"):
        neighbours.neighbourhood_graph(x, k1=10, k2=3)
    with pytest.raises(ValueError, match=r"`k2` must be smaller than the number of training items \(10\), got 12"):
        neighbours.neighbourhood_graph(x, k1=3, k2=12)
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="`features` must be finite"):
        neighbours.neighbourhood_graph(bad, k1=3, k2=3)


def test_pca_features_keep_the_directions_that_vary_most(rng):
    # Items on a line through a 5-d space: one component holds all the variance, in the order along the line.
    t = rng.standard_normal(40)
    x = np.outer(t, [1.0, 2.0, 0.0, -1.0, 0.5]) + 3.0
    features = neighbours.pca_features(x.reshape(40, 5, 1), components=128, seed=0)
    assert features.shape == (40, 5)  # no more components than the items have dimensions
    assert np.allclose(np.abs(features[:, 0]), np.abs(t - t.mean()) * np.linalg.norm([1.0, 2.0, 0.0, -1.0, 0.5]))
    assert np.allclose(features[:, 1:], 0.0, atol=1e-9)
    assert neighbours.pca_features(x[:3], components=128).shape[1] == 3  # nor more than there are items
    with pytest.raises(ValueError, match="`components`"):
        neighbours.pca_features(x, components=0)
