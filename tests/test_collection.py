"""Saved indexes and collections streamed into them (tfhash.index.save / load / build, tfhash.sources)."""

import json
import mmap
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import tfhash
from tests.helpers import ROOT
from tfhash import codes, collection, index, sources

BITS = 20


class ThresholdEncoder:
    """An encoder stand-in: bit k of an item is its k-th value >= 0.5 (exact, fast, deterministic)."""

    scheme = "threshold"
    item_shape = (5, 4, 1)
    bits = BITS

    def __init__(self, fingerprint="f1", fail_after=None):
        self.fingerprint = fingerprint
        self.calls, self.fail_after = 0, fail_after

    def encode(self, x, batch_size=256):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("stopped")
        flat = np.asarray(x, np.float32).reshape(len(x), -1)[:, :BITS]
        return codes.pack((flat >= 0.5).astype(np.uint8))


@pytest.fixture
def items(rng):
    return rng.random((1000, 5, 4, 1)).astype(np.float32)


def _indexes():
    yield "numpy", {}
    yield "numpy", {"kind": "mih"}
    yield "faiss", {"kind": "flat"}
    yield "faiss", {"kind": "ivf", "nlist": 8, "nprobe": 8}
    yield "faiss", {"kind": "hnsw"}
    yield "faiss", {"kind": "multihash", "multihash_flips": 1}


@pytest.mark.parametrize("backend, options", list(_indexes()), ids=lambda v: str(v))
def test_saved_index_answers_like_the_one_in_memory(rng, tmp_path, backend, options):
    database = rng.integers(0, 256, (3000, 3), dtype=np.uint8)
    database[:, -1] &= 0x0F  # 20 bits
    ids = rng.permutation(10**6)[:3000]
    built = index.make_index(BITS, backend, **options).add(database, ids=ids)
    built.save(tmp_path / "idx")
    loaded = index.load(tmp_path / "idx")
    assert type(loaded) is type(built) and len(loaded) == 3000 and loaded.bits == BITS
    queries = database[:25]
    for got, want in zip(loaded.search(queries, 10), built.search(queries, 10)):
        np.testing.assert_array_equal(got, want)
    if options.get("kind") != "hnsw":
        for got, want in zip(loaded.range_search(queries, 3), built.range_search(queries, 3)):
            np.testing.assert_array_equal(got, want)
    if backend == "numpy":
        assert isinstance(loaded._mapped[0], np.memmap) and isinstance(loaded._id_parts[0], np.memmap)  # not read
    assert sorted(os.listdir(tmp_path)) == ["idx"]  # no temporary directory left


def test_a_loaded_index_takes_more_codes_and_saves_again(rng, tmp_path):
    database = rng.integers(0, 16, (500, 3), dtype=np.uint8)
    index.make_index(BITS).add(database[:300]).save(tmp_path / "a")
    loaded = index.load(tmp_path / "a").add(database[300:])
    loaded.save(tmp_path / "a", overwrite=True)
    whole = index.make_index(BITS).add(database)
    for got, want in zip(index.load(tmp_path / "a").search(database[:9], 7), whole.search(database[:9], 7)):
        np.testing.assert_array_equal(got, want)


def test_an_index_saved_with_an_option_since_retired_still_loads(rng, tmp_path):
    database = rng.integers(0, 16, (200, 3), dtype=np.uint8)
    index.make_index(BITS).add(database).save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "index.json").read_text())
    manifest["options"] = {"chunk_size": 2097152, "n_jobs": 1}  # as versions before the range-search kernel wrote
    (tmp_path / "idx" / "index.json").write_text(json.dumps(manifest))
    loaded = index.load(tmp_path / "idx")
    assert loaded.n_jobs == 1 and not hasattr(loaded, "chunk_size")
    for got, want in zip(loaded.range_search(database[:5], 4), index.make_index(BITS).add(database).range_search(
            database[:5], 4)):
        np.testing.assert_array_equal(got, want)


def test_codes_added_to_a_loaded_index_are_held_beside_the_mapped_ones(rng, tmp_path):
    database = rng.integers(0, 4, (3000, 3), dtype=np.uint8)  # few distinct codes: ties across both parts
    ids = rng.permutation(10**6)[:3000]
    index.make_index(BITS).add(database[:2000], ids=ids[:2000]).save(tmp_path / "a")
    loaded = index.load(tmp_path / "a").add(database[2000:2500], ids=ids[2000:2500])
    loaded.search(database[:1], 5)  # the first addition is joined; a second one joins it later
    loaded.add(database[2500:], ids=ids[2500:])
    whole = index.make_index(BITS).add(database, ids=ids)
    queries = database[::97]
    for k in (7, 1500, 3000):
        for got, want in zip(loaded.search(queries, k), whole.search(queries, k)):
            np.testing.assert_array_equal(got, want)
    for got, want in zip(loaded.range_search(queries, 3), whole.range_search(queries, 3)):
        np.testing.assert_array_equal(got, want)
    assert isinstance(loaded._mapped[0], np.memmap) and len(loaded._mapped[0]) == 2000 and len(loaded) == 3000
    loaded.save(tmp_path / "b")
    whole.save(tmp_path / "c")
    for name in ("codes-000000.bin", "ids-000000.bin"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()


def test_a_loaded_ivf_index_maps_its_lists_and_still_takes_more_codes(rng, tmp_path):
    faiss = pytest.importorskip("faiss")
    database = rng.integers(0, 16, (3000, 3), dtype=np.uint8)
    built = index.make_index(BITS, "faiss", kind="ivf", nlist=20, nprobe=20).add(database[:2000])
    built.save(tmp_path / "a")
    queries = database[::50]
    before = built.search(queries, 10)
    loaded = index.load(tmp_path / "a")
    assert isinstance(faiss.downcast_InvertedLists(loaded._index.invlists), faiss.OnDiskInvertedLists)
    assert isinstance(loaded._all_ids(), np.memmap)  # opening read neither the lists nor the ids
    for got, want in zip(loaded.search(queries, 10), before):
        np.testing.assert_array_equal(got, want)
    loaded.save(tmp_path / "b")  # written out from the mapped lists
    loaded.add(database[2000:])
    built.add(database[2000:])
    for got, want in zip(loaded.search(queries, 10), built.search(queries, 10)):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(index.load(tmp_path / "b").search(queries, 10), before):
        np.testing.assert_array_equal(got, want)


def test_saving_never_replaces_what_is_not_an_index(rng, tmp_path):
    built = index.make_index(BITS).add(rng.integers(0, 16, (50, 3), dtype=np.uint8))
    user = tmp_path / "work"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="not empty"):
            built.save(user, overwrite=overwrite)
    assert (user / "notes.txt").read_text() == "mine"
    built.save(tmp_path / "idx")
    other = index.make_index(BITS).add(rng.integers(0, 16, (5, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="pass overwrite=True"):
        other.save(tmp_path / "idx")
    (tmp_path / "idx" / "extra.txt").write_text("mine")
    with pytest.raises(ValueError, match="holding nothing else"):
        other.save(tmp_path / "idx", overwrite=True)
    assert (tmp_path / "idx" / "extra.txt").exists()


def test_an_index_that_gains_a_file_while_it_is_saved_over_is_kept(rng, tmp_path, monkeypatch):
    built = index.make_index(BITS).add(rng.integers(0, 16, (50, 3), dtype=np.uint8))
    built.save(tmp_path / "idx")
    honour_umask = tfhash._io.honour_umask

    def user_writes_meanwhile(path):  # the new index is finished; the user drops a file into the old one
        honour_umask(path)
        (tmp_path / "idx" / "notes.txt").write_text("mine")

    monkeypatch.setattr(tfhash._io, "honour_umask", user_writes_meanwhile)
    other = index.make_index(BITS).add(rng.integers(0, 16, (5, 3), dtype=np.uint8))
    with pytest.raises(FileExistsError, match=r"no longer only a previous index \(it is a saved tfhash index "
                                              r"that also holds other files or folders \(notes.txt\)\); nothing was "
                                              r"replaced"):
        other.save(tmp_path / "idx", overwrite=True)
    assert (tmp_path / "idx" / "notes.txt").read_text() == "mine"
    assert len(index.load(tmp_path / "idx")) == 50
    assert sorted(os.listdir(tmp_path)) == ["idx"]  # neither the new index nor the moved-aside one is left


def test_damaged_indexes_are_refused_with_what_is_wrong(rng, tmp_path):
    index.make_index(BITS).add(rng.integers(0, 16, (100, 3), dtype=np.uint8)).save(tmp_path / "idx")
    with open(tmp_path / "idx" / "codes-000000.bin", "r+b") as f:
        f.truncate(150)
    with pytest.raises(ValueError, match=r"codes-000000.bin is truncated: 150 bytes, the manifest says 300"):
        index.load(tmp_path / "idx")
    (tmp_path / "idx" / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match="index.json is not valid JSON"):
        index.load(tmp_path / "idx")
    with pytest.raises(ValueError, match="must be a saved tfhash index"):
        index.load(tmp_path)
    index.make_index(BITS, "faiss").add(rng.integers(0, 16, (100, 3), dtype=np.uint8)).save(tmp_path / "f")
    with open(tmp_path / "f" / "faiss.index", "r+b") as f:
        f.truncate(40)
    with pytest.raises(ValueError, match="faiss.index is truncated"):
        index.load(tmp_path / "f")


def test_an_index_refuses_the_codes_of_another_encoder(items, tmp_path):
    tfhash.build(ThresholdEncoder("f1"), items, tmp_path / "idx", progress=False)
    index.load(tmp_path / "idx", encoder=ThresholdEncoder("f1"))
    with pytest.raises(ValueError, match="not the encoder whose codes the index"):
        index.load(tmp_path / "idx", encoder=ThresholdEncoder("f2"))
    other_bits = ThresholdEncoder("f1")
    other_bits.bits = 24
    with pytest.raises(ValueError, match="makes 24-bit codes; the index .* holds 20-bit codes"):
        index.load(tmp_path / "idx", encoder=other_bits)
    manifest = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert manifest["encoder"] == {"scheme": "threshold", "bits": BITS, "fingerprint": "f1"}
    assert manifest["count"] == len(items) and manifest["details"]["skipped"] == []


def test_build_from_an_array_and_a_npy_file_gives_the_encoders_codes(items, tmp_path):
    encoder = ThresholdEncoder()
    np.save(tmp_path / "items.npy", items)
    for name, source in (("a", items), ("b", str(tmp_path / "items.npy"))):
        built = tfhash.build(encoder, source, tmp_path / name, batch_size=64, progress=False)
        np.testing.assert_array_equal(built._stored()[0], encoder.encode(items))
        np.testing.assert_array_equal(built._stored()[1], np.arange(len(items)))
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "items.npy"]  # the working directories are gone
    keys = np.arange(len(items), dtype=np.int64) * 7 + 3  # a key column of the user's
    keyed = tfhash.build(encoder, items, tmp_path / "keyed", ids=keys, progress=False)
    np.testing.assert_array_equal(keyed.search(encoder.encode(items[5:6]), 1)[1][0], keys[5:6])
    with pytest.raises(ValueError, match=r"`ids` must be 1-D integers, one per item of the source \(1000\)"):
        tfhash.build(encoder, items, tmp_path / "d", ids=keys[:10], progress=False)
    with pytest.raises(ValueError, match=r"holds items of shape \(20,\); the encoder takes \(5, 4, 1\)"):
        tfhash.build(encoder, items.reshape(1000, 20), tmp_path / "c", progress=False)
    assert not os.path.exists(tmp_path / "c")


def test_a_build_of_kind_mih_saves_its_tables_ready_to_search(items, tmp_path):
    built = tfhash.build(ThresholdEncoder(), items, tmp_path / "mih", progress=False, kind="mih")
    scan = tfhash.build(ThresholdEncoder(), items, tmp_path / "flat", progress=False)
    assert built.kind == "mih" and built._runs[0].count == 1000 and isinstance(built._runs[0].rows, np.memmap)
    queries = ThresholdEncoder().encode(items[:20])
    for got, want in zip(built.search(queries, 10), scan.search(queries, 10)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="`kind` must be one of flat, mih, auto, got 'ivf'"):
        tfhash.build(ThresholdEncoder(), items, tmp_path / "bad", progress=False, kind="ivf")
    assert not (tmp_path / "bad").exists()


def test_an_interrupted_build_resumes_to_the_same_index(items, tmp_path, monkeypatch):
    monkeypatch.setattr(collection, "FLUSH_SECONDS", 0.0)  # record progress after every batch
    tfhash.build(ThresholdEncoder(), items, tmp_path / "whole", batch_size=64, progress=False)
    with pytest.raises(KeyboardInterrupt):
        tfhash.build(ThresholdEncoder(fail_after=7), items, tmp_path / "resumed", batch_size=64, progress=False)
    assert not os.path.exists(tmp_path / "resumed")
    work = tmp_path / ".resumed.build"
    state = json.loads((work / "build.json").read_text())
    assert state["written"] == 7 * 64
    with open(work / "codes-000000.bin", "ab") as f:
        f.write(b"\x07" * 9)  # a partly written batch after the last record: cut off on resumption
    with pytest.raises(ValueError, match="pass resume=True"):
        tfhash.build(ThresholdEncoder(), items, tmp_path / "resumed", batch_size=64, progress=False, resume=False)
    with pytest.raises(ValueError, match="another batch_size"):
        tfhash.build(ThresholdEncoder(), items, tmp_path / "resumed", batch_size=32, progress=False)
    encoder = ThresholdEncoder()
    tfhash.build(encoder, items, tmp_path / "resumed", batch_size=64, progress=False)
    assert encoder.calls == int(np.ceil((len(items) - 7 * 64) / 64))  # only what was missing was encoded
    for name in ("codes-000000.bin", "ids-000000.bin"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert not work.exists()


def _write_images(folder, images, labels):
    for i, (image, label) in enumerate(zip(images, labels)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(folder / str(label) / f"{i:03d}.png")


def test_an_image_folder_with_a_corrupt_file_is_reported_skipped_and_counted(items, tmp_path):
    images = np.round(items[:30] * 255) / 255  # exactly representable as 8-bit PNG pixels
    _write_images(tmp_path / "photos", images, np.arange(30) % 3)
    (tmp_path / "photos" / "1" / "broken.png").write_bytes(b"not an image")
    source = sources.open_source(str(tmp_path / "photos"), (5, 4, 1))
    assert source.count == 31 and source.class_names == ["0", "1", "2"]
    with pytest.warns(UserWarning, match=r"skipped 1/broken.png \(id \d+\): Unknown image file format"):
        built = tfhash.build(ThresholdEncoder(), str(tmp_path / "photos"), tmp_path / "idx", batch_size=4,
                            progress=False)
    assert len(built) == 30
    skipped = index.read_manifest(tmp_path / "idx")["details"]["skipped"]
    assert [entry["item"] for entry in skipped] == ["1/broken.png"]
    broken = source.files.index(os.path.join("1", "broken.png"))
    assert skipped[0]["id"] == broken and broken not in built._stored()[1]
    # Every other file is encoded from its pixels, under its position in the sorted listing.
    order = [int(os.path.basename(f)[:3]) for f in source.files if "broken" not in f]
    np.testing.assert_array_equal(built._stored()[0], ThresholdEncoder().encode(images[order]))


def test_tfrecord_and_vecs_sources(items, tmp_path):
    import tensorflow as tf

    images = np.round(items[:12] * 255).astype(np.uint8)
    with tf.io.TFRecordWriter(str(tmp_path / "part-0.tfrecord")) as writer:
        for image in images:
            png = tf.io.encode_png(image).numpy()
            feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    source = sources.open_source(str(tmp_path / "*.tfrecord"), (5, 4, 1))
    assert source.count == 12
    decoded = np.concatenate([batch for _, batch in source.batches(5, 4)])
    np.testing.assert_allclose(decoded, images[5:] / 255.0, atol=1e-6)

    vectors = items[:7].reshape(7, 20)
    rows = np.concatenate([np.full((7, 1), 20, "<i4").view("<f4"), vectors], axis=1)
    rows.astype("<f4").tofile(tmp_path / "v.fvecs")
    source = sources.open_source(str(tmp_path / "v.fvecs"), (5, 4, 1))
    np.testing.assert_array_equal(np.concatenate([b for _, b in source.batches(0, 3)]), items[:7])
    (tmp_path / "bad.fvecs").write_bytes(rows.astype("<f4").tobytes()[:-3])
    with pytest.raises(ValueError, match="not a multiple of the record size 84 bytes"):
        sources.open_source(str(tmp_path / "bad.fvecs"), (5, 4, 1))


def test_tfds_source_reads_a_prepared_split(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=9):
        source = sources.open_source("tfds:mnist:test", (5, 4, 1))
        assert source.count == 9
        positions, batch = next(source.batches(2, 4))
    np.testing.assert_array_equal(positions, [2, 3, 4, 5])
    assert batch.shape == (4, 5, 4, 1) and batch.min() >= 0 and batch.max() <= 1


def test_a_build_never_writes_into_a_directory_of_someone_elses(items, tmp_path):
    theirs = tmp_path / ".idx.build"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds files no build writes \\(notes.txt\\)"):
        tfhash.build(ThresholdEncoder(), items, tmp_path / "idx", progress=False)
    assert sorted(os.listdir(theirs)) == ["notes.txt"] and not os.path.exists(tmp_path / "idx")


def test_two_builds_of_one_index_cannot_both_run(items, tmp_path):
    work = tmp_path / ".idx.build"
    work.mkdir()
    with collection._exclusive(str(work)):
        with pytest.raises(FileExistsError, match="another build of this index is running"):
            tfhash.build(ThresholdEncoder(), items, tmp_path / "idx", progress=False)
    assert not os.path.exists(tmp_path / "idx")


def _quickstart_encode_command():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        quickstart = re.search(r"## Quickstart.*?```bash\n(.*?)```", f.read(), re.S).group(1)
    return next(line for line in quickstart.splitlines() if line.startswith("python -m trainers.encode"))


@pytest.mark.e2e
def test_the_readme_encode_command_builds_from_an_export_and_searches(tmp_path):
    x, _ = tfhash.datasets.load_digits()
    hasher = tfhash.fit("greedyhash", x[:300], bits=16, epochs=1, seed=0, verbose=0)
    export = hasher.export(str(tmp_path / "export"))
    command = [re.sub(r"^--export=.*", f"--export={export}", re.sub(r"^--index=.*", f"--index={tmp_path / 'idx'}", a))
               for a in shlex.split(_quickstart_encode_command())]
    command[0] = sys.executable
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"wrote {tmp_path / 'idx'}: 1797 codes of 16 bits" in result.stdout
    lines = result.stdout.splitlines()
    assert lines[-2].startswith("query 0: 0:0 ") and " 1:0" in " " + lines[-1].split(": ", 1)[1]
    loaded = tfhash.index.load(tmp_path / "idx", encoder=hasher)  # the export's fingerprint is the hasher's
    np.testing.assert_array_equal(loaded._stored()[0], hasher.encode(x))
    again = subprocess.run(command[:-1], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 1 and "exists and is not empty" in again.stderr
    np.save(tmp_path / "queries.npy", x[5:7])
    searched = subprocess.run([sys.executable, "-m", "trainers.encode", f"--export={export}",
                               f"--index={tmp_path / 'idx'}", f"--query={tmp_path / 'queries.npy'}", "--k=2"],
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert searched.returncode == 0 and searched.stdout.splitlines()[-1].startswith("query 1: "), searched.stderr
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "query.png")
    refused = subprocess.run([sys.executable, "-m", "trainers.encode", f"--index={tmp_path / 'idx'}",
                              f"--query={tmp_path / 'query.png'}"], capture_output=True, text=True, timeout=300,
                             cwd=ROOT)
    assert refused.returncode != 0 and "query.png needs --export to be encoded" in refused.stderr


def test_memory_mapped_sources_let_go_of_the_pages_they_have_read(items, tmp_path, monkeypatch):
    np.save(tmp_path / "items.npy", items)
    rows = np.concatenate([np.full((7, 1), 20, "<i4").view("<f4"), items[:7].reshape(7, 20)], axis=1)
    rows.astype("<f4").tofile(tmp_path / "v.fvecs")
    released = []
    for name in ("items.npy", "v.fvecs"):
        source = sources.open_source(str(tmp_path / name), (5, 4, 1))
        mapping = sources._file_mapping(source.array)
        assert mapping is not None  # found under the reshaped, strided view too
        monkeypatch.setattr(sources, "RELEASE_BYTES", 1)
        before = len(released)
        monkeypatch.setattr(sources, "_release", lambda m: (released.append(m), m.madvise(mmap.MADV_DONTNEED)))
        batches = list(source.batches(0, 3))
        assert len(released) - before == len(batches)
        np.testing.assert_array_equal(np.concatenate([b for _, b in batches]), items[:source.count])
    assert sources._file_mapping(items) is None
