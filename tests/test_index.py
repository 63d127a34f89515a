import importlib.util
import threading

import numpy as np
import pytest

from tfhash import codes, index


def _random_codes(rng, n, bits):
    return codes.pack(rng.integers(0, 2, (n, bits), dtype=np.uint8))


def _brute_force(queries, database, k):
    d = codes.hamming_distance(queries, database).astype(np.int64)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, axis=1), order


@pytest.mark.parametrize("bits", [8, 16, 20, 64, 128])
def test_search_matches_brute_force_with_ties_by_index(rng, bits):
    db = _random_codes(rng, 2000, bits)
    q = _random_codes(rng, 25, bits)
    d, ids = index.HammingIndex(bits).add(db).search(q, 50)
    expected_d, expected_ids = _brute_force(q, db, 50)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(d, expected_d)


def test_search_with_ids_added_in_parts_and_padding(rng):
    db = _random_codes(rng, 30, 16)
    idx = index.HammingIndex(16)
    idx.add(db[:10], ids=np.arange(100, 110)).add(db[10:], ids=np.arange(200, 220))
    assert len(idx) == 30
    d, ids = idx.search(db[:2], 40)  # more than the 30 items: k is capped at the index size
    assert ids.shape == (2, 30) and d.shape == (2, 30) and np.all(ids >= 100)
    assert ids[0, 0] == 100 and d[0, 0] == 0  # each code finds itself first
    assert set(ids[0, :30]) == set(range(100, 110)) | set(range(200, 220))


@pytest.mark.parametrize("bits,radius", [(16, 5), (64, 26), (8, 8)])
def test_range_search_is_inclusive_and_sorted(rng, bits, radius):
    db = _random_codes(rng, 5000, bits)  # more than one scan block; 70 queries: more than two query blocks
    q = _random_codes(rng, 70, bits)
    idx = index.HammingIndex(bits).add(db)
    idx._run = lambda queries, worker: [worker(0, 33), worker(33, 70)]  # two workers' ranges, as threads split
    lims, d, ids = idx.range_search(q, radius)
    full = codes.hamming_distance(q, db)
    assert lims[-1] > 70  # many hits per query
    for i in range(70):
        expected = np.flatnonzero(full[i] <= radius)
        expected = expected[np.argsort(full[i][expected], kind="stable")]
        np.testing.assert_array_equal(ids[lims[i]:lims[i + 1]], expected)
        np.testing.assert_array_equal(d[lims[i]:lims[i + 1]], full[i][expected])


def test_faiss_flat_gives_identical_results(rng):
    pytest.importorskip("faiss")
    for bits in (12, 64):
        db = _random_codes(rng, 3000, bits)
        q = _random_codes(rng, 20, bits)
        ours = index.HammingIndex(bits).add(db)
        theirs = index.FaissIndex(bits, "flat").add(db)
        for a, b in zip(ours.search(q, 30), theirs.search(q, 30)):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(ours.range_search(q, 3 if bits == 12 else 24), theirs.range_search(q, 3 if bits == 12 else 24)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "multihash"])
def test_faiss_approximate_backends_find_most_true_neighbours(rng, kind):
    pytest.importorskip("faiss")
    # Clustered codes: 20 centres, items differ from their centre in a few bits.
    centres = rng.integers(0, 2, (20, 64), dtype=np.uint8)
    members = centres[rng.integers(0, 20, 5000)] ^ (rng.random((5000, 64)) < 0.05)
    db = codes.pack(members.astype(np.uint8))
    q = db[:50]
    _, exact = index.HammingIndex(64).add(db).search(q, 10)
    _, approx = index.make_index(64, "faiss", kind=kind).add(db).search(q, 10)
    d_exact = codes.hamming_distance(q, db)[np.arange(50)[:, None], exact]
    d_approx = codes.hamming_distance(q, db)[np.arange(50)[:, None], approx]
    # Each query is in the database: the first answer is itself (or an identical code) for nearly all.
    assert np.all(approx[:, 0] >= 0) and np.mean(d_approx[:, 0] == 0) >= 0.9
    # Approximate answers may differ among tied codes; compare their distances instead of ids.
    assert np.mean(d_approx <= d_exact.max(axis=1, keepdims=True)) > 0.9


def test_codes_go_to_faiss_without_copy(rng):
    pytest.importorskip("faiss")
    db = _random_codes(rng, 100, 64)
    idx = index.FaissIndex(64)
    seen = []
    idx._index = idx._new_faiss_index(db)
    original = idx._index.add
    idx._index.add = lambda x: (seen.append(x), original(x))
    idx.add(db)
    assert seen[0] is db  # the caller's array itself: no copy, no re-packing


def test_bad_inputs_are_refused(rng):
    idx = index.HammingIndex(32)
    with pytest.raises(ValueError, match="`codes` must be 4 bytes wide for bits=32.*got 8 bytes"):
        idx.add(np.zeros((3, 8), np.uint8))
    with pytest.raises(ValueError, match="`codes` must be packed codes of dtype uint8.*int32"):
        idx.add(np.zeros((3, 4), np.int32))
    with pytest.raises(ValueError, match="`ids` must be 1-D integers, one per code \\(3\\)"):
        idx.add(np.zeros((3, 4), np.uint8), ids=[1, 2])
    with pytest.raises(ValueError, match="`k` must be a positive integer"):
        idx.search(np.zeros((1, 4), np.uint8), 0)
    with pytest.raises(ValueError, match="`bits` must be a positive integer"):
        index.HammingIndex(-3)
    with pytest.raises(ValueError, match="`backend` must be one of"):
        index.make_index(32, "annoy")


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_k_is_capped_at_the_index_size(rng, backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    idx = index.make_index(16, backend).add(_random_codes(rng, 20, 16))
    d, ids = idx.search(_random_codes(rng, 3, 16), 10**8)  # would allocate gigabytes if not capped
    assert d.shape == ids.shape == (3, 20) and np.all(ids >= 0) and np.all(d < index.PAD_DISTANCE)
    d, ids = index.make_index(16, backend).search(_random_codes(rng, 3, 16), 5)  # empty index
    assert d.shape == ids.shape == (3, 0)


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
@pytest.mark.parametrize("bad_ids,message", [
    (np.array([0, -5, 2]), r"\[0, 2\*\*63 - 1\].*\[-5, 2\]"),
    (np.array([1, 2**63 + 7, 3], dtype=np.uint64), r"\[0, 2\*\*63 - 1\]"),
])
def test_ids_that_cannot_be_represented_are_refused(rng, backend, bad_ids, message):
    if backend == "faiss":
        pytest.importorskip("faiss")
    idx = index.make_index(16, backend)
    with pytest.raises(ValueError, match=message):
        idx.add(_random_codes(rng, 3, 16), ids=bad_ids)
    assert len(idx) == 0
    big = np.array([0, 2**63 - 1, 5], dtype=np.uint64)  # the largest representable id is kept exactly
    _, ids = idx.add(_random_codes(rng, 3, 16), ids=big).search(_random_codes(rng, 1, 16), 3)
    assert sorted(ids[0].tolist()) == [0, 5, 2**63 - 1]


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_codes_with_padding_bits_set_are_refused(rng, backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    good = _random_codes(rng, 10, 12)
    bad = good.copy()
    bad[3, 1] |= 0b1000_0000  # a bit above bit 12
    idx = index.make_index(12, backend)
    with pytest.raises(ValueError, match=r"unused high 4 bits.*1 codes \(first at row 3\)"):
        idx.add(bad)
    idx.add(good)
    with pytest.raises(ValueError, match="`queries` must have the unused high 4 bits"):
        idx.search(bad, 2)
    with pytest.raises(ValueError, match="unused high 4 bits"):
        codes.unpack(bad, 12)


def test_ivf_first_add_smaller_than_its_lists(rng):
    pytest.importorskip("faiss")
    with pytest.raises(ValueError, match=r"nlist=50.*at least 50 codes, got 12"):
        index.FaissIndex(16, "ivf", nlist=50).add(_random_codes(rng, 12, 16))
    small = _random_codes(rng, 6, 16)  # default nlist never exceeds the first add
    d, ids = index.FaissIndex(16, "ivf").add(small).search(small, 1)
    assert np.all(d[:, 0] == 0)
    assert len(index.FaissIndex(16, "ivf").add(small[:0])) == 0


def _backends():
    return ["numpy", "mih"] + (["faiss"] if importlib.util.find_spec("faiss") else [])


def _make(bits, backend):
    """An empty index of ``backend``, or the exact index with multi-index hashing tables for "mih"."""
    return index.make_index(bits, kind="mih") if backend == "mih" else index.make_index(bits, backend)


@pytest.mark.parametrize("backend", _backends())
def test_threads_searching_one_index_get_correct_results_and_change_nothing(rng, backend):
    db, q = _random_codes(rng, 20_000, 64), _random_codes(rng, 40, 64)
    expected_d, expected_pos = _brute_force(q, db, 10)
    failures = []
    for _ in range(30):
        idx = _make(64, backend)
        for part in np.array_split(db, 4):  # codes waiting to be merged: the first searches merge them
            idx.add(part)
        barrier = threading.Barrier(4)

        def search(idx=idx, barrier=barrier):
            barrier.wait()
            try:
                d, ids = idx.search(q, 10)
                if not (np.array_equal(d, expected_d) and np.array_equal(ids, expected_pos)):
                    failures.append("wrong results")
            except Exception as err:  # noqa: BLE001 - any error in a thread is a failure of the test
                failures.append(repr(err))

        threads = [threading.Thread(target=search) for _ in range(4)]  
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(idx) == 20_000
    assert failures == []


@pytest.mark.parametrize("backend", _backends())
def test_add_while_another_thread_searches_loses_no_code(rng, backend):
    db, q = _random_codes(rng, 4_000, 32), _random_codes(rng, 20, 32)
    for _ in range(20):
        idx = _make(32, backend).add(db[:2_000])
        stop, errors = threading.Event(), []

        def search(idx=idx, stop=stop, errors=errors):
            while not stop.is_set():
                try:
                    idx.search(q, 5)
                    idx.range_search(q, 3)
                except Exception as err:  # noqa: BLE001
                    errors.append(repr(err))

        searcher = threading.Thread(target=search)
        searcher.start()
        for part in np.array_split(db[2_000:], 10):
            idx.add(part)
        stop.set()
        searcher.join()
        assert errors == [] and len(idx) == 4_000
        d, ids = idx.search(db, 1)  # every code finds itself (or an identical one) at distance 0
        assert np.all(d[:, 0] == 0)
        assert sorted(idx.search(q, 4_000)[1][0].tolist()) == list(range(4_000))


@pytest.mark.parametrize("backend", _backends())
def test_ties_follow_insertion_order_for_every_backend_and_search_kind(backend):
    codes_ = np.zeros((6, 2), np.uint8)  # six identical codes: every distance ties
    ids = np.array([50, 10, 40, 20, 30, 0])
    idx = _make(16, backend).add(codes_[:3], ids=ids[:3]).add(codes_[3:], ids=ids[3:])
    _, found = idx.search(codes_[:1], 6)
    lims, _, within = idx.range_search(codes_[:1], 0)
    assert found[0].tolist() == within.tolist() == ids.tolist()  # not sorted by id
    lims, distances, _ = idx.range_search(codes_[:1], 2**31)  # any radius: capped at the code length
    assert lims.tolist() == [0, 6] and distances.tolist() == [0] * 6


def _clustered_codes(rng, n, bits, centres=40, flips=3):
    """Codes near a few centres (a few random bits flipped): what an encoder makes of similar images."""
    bits01 = rng.integers(0, 2, (centres, bits), dtype=np.uint8)[rng.integers(0, centres, n)]
    for column in rng.integers(0, bits, (flips, n)):
        bits01[np.arange(n), column] ^= 1
    return codes.pack(bits01)


def test_an_unknown_kind_is_refused_by_name():
    with pytest.raises(ValueError, match="`kind` must be one of flat, mih, auto, got 'scan'"):
        index.make_index(64, kind="scan")


@pytest.mark.parametrize("bits", [12, 64, 100])
def test_multi_index_hashing_answers_as_the_scan_over_several_runs_of_tables(rng, bits, monkeypatch):
    from tfhash.index import flat

    monkeypatch.setattr(flat, "SCAN_TAIL", 500)  # runs of tables after every 500 added codes
    db, q = _clustered_codes(rng, 6_000, bits), _clustered_codes(rng, 30, bits)
    mih, scan = index.make_index(bits, kind="mih"), index.make_index(bits)
    runs = []
    for part in np.array_split(np.arange(6_000), [3_000, 3_400, 4_200, 5_000]):
        mih.add(db[part])
        scan.add(db[part])
        mih.search(q[:1], 1)  # tables the rows added so far (a run, or a merge of runs)
        runs.append([run.count for run in mih._runs])
    # 400 rows are scanned; 800 more make a run; a run of 800 merges into the 1,200 before it, and that into the first
    assert runs == [[3_000], [3_000], [3_000, 1_200], [5_000], [5_000, 1_000]]
    for k in (1, 10, 500):
        assert all(np.array_equal(a, b) for a, b in zip(mih.search(q, k), scan.search(q, k)))
    for radius in (0, 2, bits // 4):
        assert all(np.array_equal(a, b) for a, b in zip(mih.range_search(q, radius), scan.range_search(q, radius)))


def test_saved_tables_are_memory_mapped_on_load_and_kept_by_their_kind(rng, tmp_path):
    db, q = _clustered_codes(rng, 5_000, 64), _clustered_codes(rng, 20, 64)
    path = index.make_index(64, kind="mih").add(db).save(tmp_path / "mih")
    loaded = index.load(path)
    assert loaded.kind == "mih" and isinstance(loaded._runs[0].rows, np.memmap)
    assert loaded._runs[0].rows.dtype == np.uint32  # 4 bytes per code per substring
    scan = index.make_index(64).add(db)
    assert all(np.array_equal(a, b) for a, b in zip(loaded.search(q, 10), scan.search(q, 10)))
    with pytest.raises(ValueError, match="`kind` 'flat' disagrees"):
        index.load(path, kind="flat")
    assert index.load(index.make_index(64).add(db).save(tmp_path / "flat")).kind == "flat"


def test_damaged_tables_are_refused_or_cost_results_never_wrong_ones(rng, tmp_path):
    import json

    db, q = _clustered_codes(rng, 3_000, 32), _clustered_codes(rng, 20, 32)
    path = index.make_index(32, kind="mih").add(db).save(tmp_path / "mih")
    manifest = json.loads((tmp_path / "mih" / "index.json").read_text())
    rows_file = tmp_path / "mih" / manifest["tables"][0]["rows_file"]["name"]
    rows = np.fromfile(rows_file, np.uint32)
    rows[::7] = rows[::-7][:rows[::7].shape[0]]  # rows moved to other buckets, and out of range
    rows[5] = 10**9
    rows.tofile(rows_file)
    with pytest.raises(ValueError, match="damaged"):
        index.load(path)  # the checksum
    unchecked = index.load(path, verify=False)
    want_d, _ = _brute_force(q, db, 3_000)
    lims, distances, ids = unchecked.range_search(q, 32)
    for i in range(len(q)):  # every code found is at its true distance, and found once
        found = ids[lims[i]:lims[i + 1]]
        assert np.unique(found).shape == found.shape
        np.testing.assert_array_equal(distances[lims[i]:lims[i + 1]],
                                      codes.hamming_distance(q[i:i + 1], db[found])[0])
    offsets_file = tmp_path / "mih" / manifest["tables"][0]["offsets"]["name"]
    offsets = np.fromfile(offsets_file, np.int32)  # 4-byte offsets below 2**31 rows
    offsets[3] = 10**6
    offsets.tofile(offsets_file)
    with pytest.raises(ValueError, match="offsets of substring table 0 do not delimit its rows"):
        index.load(path, verify=False)
    manifest["tables"][0]["substrings"] = [[0, 16], [20, 16]]
    (tmp_path / "mih" / "index.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"tables\[0\].substrings must be"):
        index.load(path, verify=False)


def test_auto_takes_tables_where_its_rule_says_and_answers_the_same(rng, monkeypatch):
    from tfhash.index import flat, mih

    db, q = _clustered_codes(rng, 4_000, 64), _clustered_codes(rng, 30, 64)
    scan = index.make_index(64).add(db)
    small = index.make_index(64, kind="auto").add(db)
    small.search(q, 10)
    assert small._runs == []  # below AUTO_MIN_CODES: no tables
    monkeypatch.setattr(flat, "AUTO_MIN_CODES", 1_000)
    rules, searched = [], []
    monkeypatch.setattr(flat, "prefers_tables", lambda count, work, batch: rules.append((count, work)) or batch == 1)
    nearest = mih.SubstringTables.nearest
    monkeypatch.setattr(mih.SubstringTables, "nearest", lambda *a: searched.append(len(a[1])) or nearest(*a))
    auto = index.make_index(64, kind="auto").add(db)
    for batch in (q[:1], q):
        assert all(np.array_equal(a, b) for a, b in zip(auto.search(batch, 10), scan.search(batch, 10)))
    assert searched == [1]  # the single query by the tables, the batch by the scan
    assert len(rules) == 2 and rules[0][0] == 4_000 and 0 < rules[0][1] < 4_000  # fewer reads than codes


def test_searches_that_take_in_most_codes_are_scanned_with_the_same_answers(rng):
    from tfhash.index import mih

    db, q = _random_codes(rng, 20_000, 64), _random_codes(rng, 5, 64)
    tables, scan = index.make_index(64, kind="mih").add(db), index.make_index(64).add(db)
    scanned = []
    knn = mih._kernels.knn
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mih._kernels, "knn", lambda queries, *a: scanned.append(len(queries)) or knn(queries, *a))
        found = tables.search(q, 20_000)  # every code: all 2**13 keys of every table
    assert scanned == [5]
    for got, want in zip(found, scan.search(q, 20_000)):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(tables.range_search(q, 64), scan.range_search(q, 64)):
        np.testing.assert_array_equal(got, want)
    clustered = _clustered_codes(rng, 20_000, 64)
    tables, scan = index.make_index(64, kind="mih").add(clustered), index.make_index(64).add(clustered)
    mixed = np.concatenate([clustered[:3], q])  # near codes answered by the tables, far ones scanned
    scanned.clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mih._kernels, "knn", lambda queries, *a: scanned.append(len(queries)) or knn(queries, *a))
        found = tables.search(mixed, 10)
    assert scanned == [5]
    for got, want in zip(found, scan.search(mixed, 10)):
        np.testing.assert_array_equal(got, want)


def test_the_auto_rule_picks_the_faster_in_every_measured_crossover():
    import json
    import os

    from tfhash.index import flat

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "results.jsonl")
    with open(path, encoding="utf-8") as f:
        record = [r for r in map(json.loads, f) if r["benchmark"] == "mih_crossover"][-1]
    picks = {(row["collection"], row["codes"], row["batch"]): flat.prefers_tables(row["codes"], row["reads_per_query"],
                                                                                  row["batch"])
             for row in record["rows"]}
    faster = {(row["collection"], row["codes"], row["batch"]): row["mih_qps"] > row["flat_qps"]
              for row in record["rows"]}
    assert picks == faster and any(faster.values()) and not all(faster.values())
