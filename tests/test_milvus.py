"""The Milvus backend against Milvus Lite (a local server process started by pymilvus): `pytest -m milvus`."""

import itertools
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import MNIST_10K
from tests.test_properties import _bits01, _reference_search, apply_operations, operations, seeds
from tfhash import baselines, codes, datasets, index

pytestmark = pytest.mark.milvus
pytest.importorskip("pymilvus")


@pytest.fixture(scope="module")
def real_codes():
    """64-bit ITQ codes of real images: mnist-10k (digits when the shared data is absent)."""
    if os.path.isdir(MNIST_10K):
        x, _ = datasets.load_mnist_idx(os.path.join(MNIST_10K, "t10k-images-idx3-ubyte.gz"),
                                       os.path.join(MNIST_10K, "t10k-labels-idx1-ubyte.gz"))
    else:
        x, _ = datasets.load_digits()
    flat = x.reshape(len(x), -1)
    return baselines.ITQ(bits=64, seed=0).fit(flat).encode(flat)


def test_milvus_exact_search_gives_the_exact_index_distances(real_codes, tmp_path):
    database, queries = real_codes, real_codes[::100][:100]
    ids = np.arange(len(database)) * 5 + 1
    exact = index.make_index(64).add(database, ids=ids)
    milvus = index.make_index(64, "milvus", uri=str(tmp_path / "codes.db"), collection="codes").add(database, ids=ids)
    assert len(milvus) == len(database)
    want_d, want_i = exact.search(queries, 20)
    got_d, got_i = milvus.search(queries, 20)
    np.testing.assert_array_equal(got_d, want_d)
    # Ids agree up to ties at the 20th distance (Milvus may return other codes at that distance).
    below = want_d < want_d[:, -1:]
    np.testing.assert_array_equal(np.where(below, got_i, 0), np.where(below, want_i, 0))
    for got, want in zip(milvus.range_search(queries[:10], 12), exact.range_search(queries[:10], 12)):
        np.testing.assert_array_equal(got, want)


def test_milvus_index_saves_loads_and_never_replaces_a_collection(real_codes, tmp_path):
    uri = str(tmp_path / "codes.db")
    with pytest.raises(ValueError, match="needs a Milvus server"):
        index.make_index(64, "milvus", uri=uri, collection="codes", kind="ivf")
    milvus = index.make_index(64, "milvus", uri=uri, collection="codes")
    stored = real_codes[:1500]  # fewer than either data set holds (digits: 1,797)
    milvus.add(stored)
    milvus.save(tmp_path / "idx")
    before = milvus.search(real_codes[:5], 10)
    del milvus
    loaded = index.load(tmp_path / "idx")
    assert isinstance(loaded, index.MilvusIndex) and len(loaded) == len(stored) and loaded.collection == "codes"
    for got, want in zip(loaded.search(real_codes[:5], 10), before):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="already exists .* an index never replaces one"):
        index.make_index(64, "milvus", uri=uri, collection="codes")
    assert len(index.load(tmp_path / "idx")) == len(stored)  # still there
    with pytest.raises(ValueError, match="must end in .db"):
        index.make_index(64, "milvus", uri=str(tmp_path / "codes.sqlite"))


def test_milvus_refuses_a_k_beyond_its_limit_and_pages_a_fuller_range(tmp_path):
    database = np.random.default_rng(0).integers(0, 256, (20000, 2), dtype=np.uint8)
    ids = np.arange(20000) * 3 + 7
    milvus = index.make_index(16, "milvus", uri=str(tmp_path / "c.db")).add(database, ids=ids)
    with pytest.raises(ValueError, match="at most 16384 for a Milvus index"):
        milvus.search(database[:1], 20000)
    exact = index.make_index(16).add(database, ids=ids)
    queries = database[:3]
    for radius in (3, 10, 16):  # hundreds of codes in each ball; more than 16,384; every code
        got, want = milvus.range_search(queries, radius), exact.range_search(queries, radius)
        for got_part, want_part in zip(got, want):
            np.testing.assert_array_equal(got_part, want_part)
    assert np.diff(want[0]).min() == 20000 and np.diff(exact.range_search(queries, 10)[0]).min() > 16384


def test_a_local_file_waits_for_a_slow_milvus_lite_start_and_a_server_address_does_not(tmp_path, monkeypatch):
    import pymilvus
    from pymilvus.exceptions import MilvusException

    real, calls = pymilvus.MilvusClient, []

    def slow_start(*args, **kwargs):  # the server's socket appears only at the third attempt
        calls.append(kwargs["uri"])
        if len(calls) < 3:
            raise MilvusException(code=2, message="Fail connecting to server on unix:/tmp/x.sock")
        return real(*args, **kwargs)

    monkeypatch.setattr(pymilvus, "MilvusClient", slow_start)
    codes = np.arange(16, dtype=np.uint8).reshape(2, 8)
    milvus = index.make_index(64, "milvus", uri=str(tmp_path / "codes.db"), collection="codes").add(codes)
    assert len(calls) == 3 and len(milvus) == 2

    def refused(*args, **kwargs):
        calls.append(kwargs["uri"])
        raise MilvusException(code=2, message="Fail connecting to server on localhost:1")

    calls.clear()
    monkeypatch.setattr(pymilvus, "MilvusClient", refused)
    with pytest.raises(MilvusException, match="localhost:1"):
        index.make_index(64, "milvus", uri="http://localhost:1", collection="codes")
    assert calls == ["http://localhost:1"]  # a server that refuses is reported at once


def test_milvus_remove_update_duplicates_and_values_not_buffers(real_codes, tmp_path):
    database = real_codes[:300]
    buffer = database[:200].copy()
    milvus = index.make_index(64, "milvus", uri=str(tmp_path / "c.db"), collection="codes").add(buffer)
    buffer[:] = 0  # refilled by the caller: what was indexed stays
    with pytest.raises(ValueError, match=r"the index already; `ids` holds id 5 twice"):
        milvus.add(database[200:202], ids=[5, 500])
    assert milvus.remove([3, 4]) == 2 and len(milvus) == 198
    with pytest.raises(ValueError, match="holds no item with id 3"):
        milvus.remove([3])
    milvus.update([7], database[250:251])
    milvus.add(database[200:210])  # default ids go on after every insertion, never reusing a removed one
    exact = index.make_index(64).add(database[:200])  # the same changes in the same order
    exact.remove([3, 4])
    exact.update([7], database[250:251])
    exact.add(database[200:210], ids=np.arange(201, 211))
    for got, want in zip(milvus.range_search(database[:20], 20), exact.range_search(database[:20], 20)):
        np.testing.assert_array_equal(got, want)


def test_a_milvus_index_moves_with_its_lite_file_and_load_creates_nothing(real_codes, tmp_path):
    folder = tmp_path / "collection"
    folder.mkdir()
    milvus = index.make_index(64, "milvus", uri=str(folder / "codes.db"), collection="codes").add(real_codes[:100])
    milvus.save(folder / "idx")
    assert index.read_manifest(folder / "idx")["location"] == {"uri": "../codes.db", "collection": "codes"}
    milvus.add(real_codes[100:120])  # added and not saved
    del milvus
    (folder).rename(tmp_path / "moved")
    with pytest.warns(UserWarning, match=r"holds 120 codes, the manifest says 100 .* index.save\(\) records that"):
        moved = index.load(tmp_path / "moved" / "idx")
    assert len(moved) == 120
    moved.save()
    assert index.read_manifest(tmp_path / "moved" / "idx")["count"] == 120
    del moved
    (tmp_path / "moved" / "codes.db").rename(tmp_path / "elsewhere.db")
    with pytest.raises(ValueError, match=r"Milvus Lite file .*codes.db' does not exist .* nothing was created"):
        index.load(tmp_path / "moved" / "idx")
    assert not (tmp_path / "moved" / "codes.db").exists()  # no empty database made in its place
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(ValueError, match=r"`uri` .* is a directory; Milvus Lite needs a .db file"):
        index.make_index(64, "milvus", uri=str(tmp_path / "dir.db"), collection="x")
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(OSError, match=r"cannot be opened by Milvus Lite: it is not a Milvus Lite database"):
        index.make_index(64, "milvus", uri=str(tmp_path / "junk.db"), collection="x")


_collections = itertools.count()


@settings(max_examples=25, deadline=None)
@given(bits=st.integers(1, 12), ops=operations, radius=st.integers(0, 12), seed=seeds)
def test_any_sequence_of_changes_on_milvus_searches_like_a_brute_force_model(bits, ops, radius, seed):
    """The property test of every backend, on Milvus: range search exact, k-NN distances exact (Milvus picks
    among codes tied at the k-th distance)."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as directory:
        milvus = index.make_index(bits, "milvus", uri=os.path.join(directory, "c.db"),
                                  collection=f"c{next(_collections)}")
        idx, ids, database_bits = apply_operations(milvus, ops, rng, bits, directory)
        if ids.size:
            query_bits = _bits01(rng, 3, bits)
            want_d, _, balls = _reference_search(query_bits, database_bits, ids, ids.size, radius)
            got_d, got_ids = idx.search(codes.pack(query_bits), ids.size)
            np.testing.assert_array_equal(got_d, want_d)
            assert sorted(got_ids[0].tolist()) == sorted(ids.tolist())
            lims, ball_d, ball_ids = idx.range_search(codes.pack(query_bits), radius)
            for i, (want_ball_d, want_ball_ids) in enumerate(balls):
                np.testing.assert_array_equal(ball_d[lims[i]:lims[i + 1]], want_ball_d)
                np.testing.assert_array_equal(ball_ids[lims[i]:lims[i + 1]], want_ball_ids)


def test_a_lite_file_in_use_by_another_process_gets_an_error_that_says_so(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pymilvus import MilvusClient; MilvusClient(uri=sys.argv[1]); "
         "print('open', flush=True); time.sleep(120)", str(tmp_path / "c.db")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(OSError, match=r"c.db' cannot be opened by Milvus Lite: .*another process has it open"):
            index.make_index(16, "milvus", uri=str(tmp_path / "c.db"))
    finally:
        holder.kill()
        holder.wait()
