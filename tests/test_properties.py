"""Property-based tests (Hypothesis) of the parts where one wrong corner loses results: the packed-code
convention, Hamming distances, every index backend against brute force, and the ranking metrics against a
plain reference. Codes of a few bits make ties the rule, not the exception."""

import contextlib
import importlib.util
import os
import tempfile
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfhash import codes, index, metrics
from tfhash.index import flat

# "mih": the exact index's multi-index hashing tables, with runs of tables made after every 2 added rows so that
# a few rows exercise several runs, their merges and their saved files.
BACKENDS = ["numpy", "mih"] + (["faiss"] if importlib.util.find_spec("faiss") else [])


def _make_index(bits, backend):
    if backend == "mih":
        return index.make_index(bits, kind="mih")
    return index.make_index(bits, backend)


def _small_runs(backend):
    return mock.patch.object(flat, "SCAN_TAIL", 2) if backend == "mih" else contextlib.nullcontext()
seeds = st.integers(0, 2**32 - 1)


def _bits01(rng, n, bits):
    return rng.integers(0, 2, (n, bits), dtype=np.uint8)


@given(bits=st.integers(1, 1024), n=st.integers(0, 6), seed=seeds)
def test_pack_unpack_round_trip_at_every_code_length(bits, n, seed):
    bits01 = _bits01(np.random.default_rng(seed), n, bits)
    packed = codes.pack(bits01)
    assert packed.shape == (n, codes.num_bytes(bits)) and packed.dtype == np.uint8
    np.testing.assert_array_equal(codes.unpack(packed, bits), bits01)
    if bits % 8:  # the unused high bits of the last byte are zero
        assert not np.any(packed[:, -1] >> (bits % 8))


@given(bits=st.integers(1, 300), nq=st.integers(1, 5), nd=st.integers(1, 40), seed=seeds)
def test_hamming_distance_counts_differing_bits(bits, nq, nd, seed):
    rng = np.random.default_rng(seed)
    q, d = _bits01(rng, nq, bits), _bits01(rng, nd, bits)
    expected = (q[:, None, :] != d[None, :, :]).sum(-1)
    np.testing.assert_array_equal(codes.hamming_distance(codes.pack(q), codes.pack(d)), expected)


def _reference_search(queries, database, ids, k, radius):
    """Brute force on the unpacked bits: ascending distance, ties by insertion position."""
    distances = (queries[:, None, :] != database[None, :, :]).sum(-1)
    order = np.argsort(distances, axis=1, kind="stable")
    top = order[:, :k]
    balls = [o[distances[i, o] <= radius] for i, o in enumerate(order)]
    return (np.take_along_axis(distances, top, 1), ids[top],
            [(distances[i, b], ids[b]) for i, b in enumerate(balls)])


@pytest.mark.parametrize("backend", BACKENDS)
@given(bits=st.integers(1, 20), nd=st.integers(1, 60), nq=st.integers(1, 4), parts=st.integers(1, 3),
       k=st.integers(1, 70), radius=st.integers(0, 25), custom_ids=st.booleans(), saved_first=st.booleans(),
       seed=seeds)
def test_every_index_backend_equals_brute_force_ties_included(backend, bits, nd, nq, parts, k, radius, custom_ids,
                                                              saved_first, seed):
    rng = np.random.default_rng(seed)
    database_bits, query_bits = _bits01(rng, nd, bits), _bits01(rng, nq, bits)
    database, queries = codes.pack(database_bits), codes.pack(query_bits)
    ids = rng.choice(2**62, nd, replace=False).astype(np.int64) if custom_ids else np.arange(nd, dtype=np.int64)
    idx = _make_index(bits, backend)
    with tempfile.TemporaryDirectory() as directory, _small_runs(backend):
        for i, chunk in enumerate(np.array_split(np.arange(nd), parts)):
            idx.add(database[chunk], ids=ids[chunk] if custom_ids else None)
            if i == 0 and saved_first:  # the rest is added to the saved, reopened (memory-mapped) first part
                idx = index.load(idx.save(os.path.join(directory, "index")))
        _check_against_brute_force(idx, query_bits, database_bits, queries, ids, k, radius)


def _check_against_brute_force(idx, query_bits, database_bits, queries, ids, k, radius):
    expected_d, expected_ids, balls = _reference_search(query_bits, database_bits, ids, k, radius)
    d, found = idx.search(queries, k)
    np.testing.assert_array_equal(d, expected_d)
    np.testing.assert_array_equal(found, expected_ids)
    lims, ball_d, ball_ids = idx.range_search(queries, radius)
    for i, (want_d, want_ids) in enumerate(balls):
        np.testing.assert_array_equal(ball_d[lims[i]:lims[i + 1]], want_d)
        np.testing.assert_array_equal(ball_ids[lims[i]:lims[i + 1]], want_ids)


def _reference_ap_and_precision(query_codes, database_codes, query_labels, database_labels, k):
    """Plain loops: rank by distance (stable: ties by database index), AP over the whole ranking."""
    distances = codes.hamming_distance(query_codes, database_codes)
    aps, precisions = [], []
    for i in range(len(query_codes)):
        ranked = np.argsort(distances[i], kind="stable")
        relevant = database_labels[ranked] == query_labels[i]
        hits, total = 0, 0.0
        for rank, is_relevant in enumerate(relevant, start=1):
            if is_relevant:
                hits += 1
                total += hits / rank
        aps.append(total / hits if hits else 0.0)
        precisions.append(relevant[:k].sum() / k)
    return float(np.mean(aps)), float(np.mean(precisions))


@given(bits=st.integers(1, 12), nq=st.integers(1, 8), nd=st.integers(1, 80), classes=st.integers(1, 4),
       k=st.integers(1, 90), seed=seeds)
def test_map_and_precision_at_k_equal_a_plain_reference(bits, nq, nd, classes, k, seed):
    rng = np.random.default_rng(seed)
    q, d = codes.pack(_bits01(rng, nq, bits)), codes.pack(_bits01(rng, nd, bits))
    ql, dl = rng.integers(0, classes, nq), rng.integers(0, classes, nd)
    k = min(k, nd)
    expected_map, expected_precision = _reference_ap_and_precision(q, d, ql, dl, k)
    assert metrics.mean_average_precision(q, d, ql, dl) == pytest.approx(expected_map, abs=1e-12)
    assert metrics.precision_at_k(q, d, ql, dl, k) == pytest.approx(expected_precision, abs=1e-12)


operations = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(0, 12)),
    st.tuples(st.just("remove"), st.integers(1, 4)),
    st.tuples(st.just("update"), st.integers(1, 4)),
    st.tuples(st.just("save and load"), st.just(0)),
    st.tuples(st.just("compact"), st.just(0))), min_size=1, max_size=12)


def apply_operations(idx, ops, rng, bits, directory):
    """Runs ``ops`` on ``idx`` and on a model, a list of (id, code) in insertion order where an update moves
    the item to the end; returns the index (reloaded ones replace it), the model's ids and its codes' bits."""
    model_ids, model_bits = [], []
    for op, n in ops:
        if op == "add":
            ids = rng.choice(np.setdiff1d(np.arange(200), model_ids), n, replace=False)
            new = _bits01(rng, n, bits)
            buffer = codes.pack(new)
            idx.add(buffer, ids=ids)
            buffer[:] = 0  # the caller refills its buffer: the index holds what it was given
            model_ids += ids.tolist()
            model_bits += list(new)
        elif op in ("remove", "update") and model_ids:
            chosen = rng.choice(model_ids, min(n, len(model_ids)), replace=False)
            keep = [i for i, item in enumerate(model_ids) if item not in set(chosen.tolist())]
            model_ids, model_bits = [model_ids[i] for i in keep], [model_bits[i] for i in keep]
            if op == "remove":
                assert idx.remove(chosen) == len(chosen)
            else:
                new = _bits01(rng, len(chosen), bits)
                idx.update(chosen, codes.pack(new))
                model_ids += chosen.tolist()
                model_bits += list(new)
        elif op == "save and load":
            path = os.path.join(directory, "index")
            idx.save(path)
            idx = index.load(path)
        elif op == "compact":
            idx.compact()
        assert len(idx) == len(model_ids)
    return idx, np.array(model_ids, np.int64), np.array(model_bits, np.uint8).reshape(-1, bits)


@pytest.mark.parametrize("backend", BACKENDS)
@given(bits=st.integers(1, 12), ops=operations, k=st.integers(1, 40), radius=st.integers(0, 12), seed=seeds)
def test_any_sequence_of_changes_searches_like_a_brute_force_model(backend, bits, ops, k, radius, seed):
    """add / remove / update / save (new, then in place) / load / compact, against a brute-force model."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as directory, _small_runs(backend):
        idx, ids, database_bits = apply_operations(_make_index(bits, backend), ops, rng, bits, directory)
        if ids.size:
            query_bits = _bits01(rng, 3, bits)
            _check_against_brute_force(idx, query_bits, database_bits, codes.pack(query_bits), ids,
                                       min(k, ids.size), radius)
