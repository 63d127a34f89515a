"""The saved index's format and the changes a collection goes through: checksums, versions, hand-edited
manifests, symbolic links, in-place appends, concurrent writers, remove / update / compact, names, the shared
folder listing, updates of a folder and encoders that give garbage."""

import ast
import json
import os
import pathlib
import threading

import numpy as np
import pytest
from PIL import Image

import tfhash
from tests.test_collection import BITS, ThresholdEncoder, _write_images
from tfhash import index, sources
from tfhash.index import format as fmt

TFHASH = pathlib.Path(tfhash.__file__).parent


@pytest.fixture
def pixels(rng):
    return rng.random((40, 5, 4, 1)).astype(np.float32)


def _database(rng, n=300):
    database = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    database[:, -1] &= 0x0F  # 20 bits
    return database


def _same_answers(a, b, queries, k=10, radius=4):
    for got, want in zip(a.search(queries, k), b.search(queries, k)):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(a.range_search(queries, radius), b.range_search(queries, radius)):
        np.testing.assert_array_equal(got, want)


def test_a_file_changed_in_place_is_refused_by_its_checksum_and_verify_false_skips_it(rng, tmp_path):
    index.make_index(BITS).add(_database(rng)).save(tmp_path / "idx")
    manifest = index.read_manifest(tmp_path / "idx")
    assert manifest["checksum"] == "xxh3_128" and manifest["version"] == index.FORMAT_VERSION == 2
    assert all(len(entry["xxh3_128"]) == 32 for entry in manifest["segments"][0].values() if isinstance(entry, dict))
    with open(tmp_path / "idx" / "codes-000000.bin", "r+b") as f:  # same size, one byte different
        f.seek(17)
        byte = f.read(1)
        f.seek(17)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ValueError, match=r"codes-000000.bin is damaged: its xxh3_128 checksum differs"):
        index.load(tmp_path / "idx")
    assert len(index.load(tmp_path / "idx", verify=False)) == 300


def test_version_1_indexes_load_and_unknown_versions_are_refused_by_name(rng, tmp_path):
    database = _database(rng)
    directory = tmp_path / "v1"
    directory.mkdir()
    database.tofile(directory / "codes.bin")
    np.arange(300, dtype="<i8").tofile(directory / "ids.bin")
    manifest = {"format": "tfhash-index", "version": 1, "backend": "numpy", "bits": BITS, "code_bytes": 3,
                "count": 300, "options": {"n_jobs": None}, "encoder": None, "details": {},
                "files": {"codes": {"name": "codes.bin", "bytes": 900}, "ids": {"name": "ids.bin", "bytes": 2400}}}
    (directory / "index.json").write_text(json.dumps(manifest))
    _same_answers(index.load(directory), index.make_index(BITS).add(database), database[:5])
    (directory / "index.json").write_text(json.dumps({**manifest, "version": 9}))
    with pytest.raises(ValueError, match=r"saved in index format version 9; this tfhash reads versions 1, 2"):
        index.load(directory)


@pytest.mark.parametrize("field, value, message", [
    ("bits", "20", r"field 'bits' must be a positive integer, got '20'"),
    ("count", -1, r"field 'count' must be a non-negative integer, got -1"),
    ("segments", {}, r"field 'segments' must be a list"),
    ("options", [1], r"field 'options' must be an object"),
    ("backend", "annoy", r"field 'backend' must be one of numpy, faiss, milvus, got 'annoy'"),
    ("encoder", "threshold", r"field 'encoder' must be null or an object"),
    ("count", 10**6, r"field 'count' \(1000000\) is larger than field 'rows' \(300\)"),
])
def test_hand_edited_manifest_fields_are_named(rng, tmp_path, field, value, message):
    index.make_index(BITS).add(_database(rng)).save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "index.json").read_text())
    manifest[field] = value
    (tmp_path / "idx" / "index.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=message):
        index.load(tmp_path / "idx")


def test_a_segment_entry_naming_a_foreign_file_is_refused(rng, tmp_path):
    index.make_index(BITS).add(_database(rng)).save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "index.json").read_text())
    manifest["segments"][0]["codes"]["name"] = "../../etc/passwd"
    (tmp_path / "idx" / "index.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"segments\[0\].codes must be a file entry"):
        index.load(tmp_path / "idx")


def test_load_refuses_a_kind_other_than_the_saved_one(rng, tmp_path):
    pytest.importorskip("faiss")
    index.make_index(BITS, "faiss", kind="flat").add(_database(rng)).save(tmp_path / "idx")
    with pytest.raises(ValueError, match=r"`kind` 'hnsw' disagrees with the index .* a 'flat' faiss index"):
        index.load(tmp_path / "idx", kind="hnsw")
    assert index.load(tmp_path / "idx", kind="flat").kind == "flat"


def test_a_symlink_as_save_target_writes_where_it_points_and_leaves_no_stray_link(rng, tmp_path):
    index.make_index(BITS).add(_database(rng)).save(tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    newer = index.make_index(BITS).add(_database(rng, 50))
    newer.save(tmp_path / "link", overwrite=True)
    assert (tmp_path / "link").is_symlink() and len(index.load(tmp_path / "real")) == 50
    assert sorted(os.listdir(tmp_path)) == ["link", "real"]  # no .old entry, no temporary directory
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="is a symbolic link to .*nowhere.*which does not exist"):
        newer.save(tmp_path / "dangling")


def test_overwrite_never_deletes_a_directory_named_like_an_index_file(rng, tmp_path):
    index.make_index(BITS).add(_database(rng)).save(tmp_path / "idx")
    (tmp_path / "idx" / "codes-000007.bin").mkdir()
    (tmp_path / "idx" / "codes-000007.bin" / "mine.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"also holds other files or folders \(codes-000007.bin\)"):
        index.make_index(BITS).add(_database(rng, 5)).save(tmp_path / "idx", overwrite=True)
    assert (tmp_path / "idx" / "codes-000007.bin" / "mine.txt").read_text() == "mine"


def test_adding_to_a_loaded_index_appends_a_segment_and_leaves_the_saved_files_alone(rng, tmp_path):
    database = _database(rng, 600)
    index.make_index(BITS).add(database[:400]).save(tmp_path / "idx")
    first = (tmp_path / "idx" / "codes-000000.bin")
    before = (first.stat().st_ino, first.stat().st_mtime_ns, first.read_bytes())
    loaded = index.load(tmp_path / "idx")
    loaded.add(database[400:])
    loaded.remove(np.arange(10, 20))
    assert loaded.save() == str(tmp_path / "idx")
    assert (first.stat().st_ino, first.stat().st_mtime_ns, first.read_bytes()) == before
    names = sorted(os.listdir(tmp_path / "idx"))
    assert "codes-000001.bin" in names and "removed-000001.bin" in names
    whole = index.make_index(BITS).add(database)
    whole.remove(np.arange(10, 20))
    _same_answers(index.load(tmp_path / "idx"), whole, database[::37])
    assert index.read_manifest(tmp_path / "idx")["generation"] == 2


def test_an_append_killed_before_its_manifest_leaves_the_saved_index_as_it_was(rng, tmp_path, monkeypatch):
    database = _database(rng)
    index.make_index(BITS).add(database[:100]).save(tmp_path / "idx")
    loaded = index.load(tmp_path / "idx").add(database[100:200])

    def killed(directory, manifest):  # the new segment is written; the process dies before the manifest
        raise KeyboardInterrupt

    monkeypatch.setattr(fmt, "commit_append", killed)
    with pytest.raises(KeyboardInterrupt):
        loaded.save()
    monkeypatch.undo()
    assert len(index.load(tmp_path / "idx")) == 100 and (tmp_path / "idx" / "codes-000001.bin").exists()
    index.load(tmp_path / "idx").add(database[100:250]).save()  # numbers past the leftover files
    reopened = index.load(tmp_path / "idx")
    _same_answers(reopened, index.make_index(BITS).add(database[:250]), database[::23])


def test_two_writers_of_one_loaded_index_cannot_both_succeed(rng, tmp_path):
    database = _database(rng)
    index.make_index(BITS).add(database[:100]).save(tmp_path / "idx")
    a, b = index.load(tmp_path / "idx"), index.load(tmp_path / "idx")
    a.add(database[100:200])
    b.add(database[200:300])
    a.save()
    with pytest.raises(FileExistsError, match="saved by another writer since this index was loaded"):
        b.save()
    assert len(index.load(tmp_path / "idx")) == 200


def test_concurrent_appends_from_threads_have_one_winner(rng, tmp_path):
    database = _database(rng)
    index.make_index(BITS).add(database[:100]).save(tmp_path / "idx")
    writers = [index.load(tmp_path / "idx").add(database[100 + 50 * i:150 + 50 * i]) for i in range(4)]
    outcomes = []

    def save(writer):
        try:
            writer.save()
            outcomes.append("saved")
        except FileExistsError:
            outcomes.append("refused")

    threads = [threading.Thread(target=save, args=(w,)) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("saved") == 1 and outcomes.count("refused") == 3
    assert len(index.load(tmp_path / "idx")) == 150


@pytest.mark.parametrize("backend, options", [("numpy", {}), ("faiss", {"kind": "flat"}), ("faiss", {"kind": "ivf",
                                              "nlist": 4, "nprobe": 4}), ("faiss", {"kind": "hnsw"})])
def test_every_backend_holds_values_not_the_callers_buffers(rng, tmp_path, backend, options):
    if backend == "faiss":
        pytest.importorskip("faiss")
    database = _database(rng, 200)
    buffer, ids = database[:100].copy(), np.arange(100)
    idx = index.make_index(BITS, backend, **options).add(buffer, ids=ids)
    buffer[:], ids[:] = database[100:], np.arange(100, 200)  # refilled for the next batch
    idx.add(buffer, ids=ids)
    buffer[:], ids[:] = 0, 7
    reference = index.make_index(BITS).add(database)
    found = idx.search(database[:20], 1)
    if options.get("kind") in (None, "flat"):
        for got, want in zip(found, reference.search(database[:20], 1)):
            np.testing.assert_array_equal(got, want)
    assert found[0][:, 0].max() == 0 and len(set(found[1][:, 0])) == 20  # each code finds itself, at distance 0


def test_duplicate_ids_are_refused_with_one_message(rng, tmp_path):
    idx = index.make_index(BITS).add(_database(rng, 10), ids=np.arange(10))
    with pytest.raises(ValueError, match=r"`ids` holds id 3 twice; ids must be unique"):
        index.make_index(BITS).add(_database(rng, 3), ids=[3, 3, 4])
    with pytest.raises(ValueError, match=r"the index already; `ids` holds id 4 twice"):
        idx.add(_database(rng, 2), ids=[4, 40])
    assert len(idx) == 10
    with pytest.raises(ValueError, match=r"`ids` holds id 5 twice; ids must be unique"):
        tfhash.build(ThresholdEncoder(), rng.random((4, 5, 4, 1)).astype(np.float32), tmp_path / "b",
                     ids=np.array([5, 5, 6, 7]), progress=False)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("backend, options", [("numpy", {}), ("faiss", {"kind": "flat"})])
def test_remove_update_and_compact(rng, tmp_path, backend, options):
    if backend == "faiss":
        pytest.importorskip("faiss")
    database = _database(rng, 400)
    idx = index.make_index(BITS, backend, **options).add(database, ids=np.arange(1000, 1400))
    assert idx.remove([1000, 1001, 1399]) == 3 and len(idx) == 397
    with pytest.raises(ValueError, match="holds no item with id 1000"):
        idx.remove([1000])
    idx.update([1002], database[5:6])  # now a copy of item 1005's code, added last
    d, found = idx.search(database[5:6], 2)
    assert found.tolist() == [[1005, 1002]] and d.tolist() == [[0, 0]]
    expected = index.make_index(BITS).add(database[3:399], ids=np.arange(1003, 1399)).add(database[5:6], ids=[1002])
    _same_answers(idx, expected, database[::41], k=30, radius=6)
    before = [a.copy() for a in idx.search(database[::41], 15)]
    idx.compact()
    for got, want in zip(idx.search(database[::41], 15), before):
        np.testing.assert_array_equal(got, want)
    idx.save(tmp_path / "idx")
    assert index.read_manifest(tmp_path / "idx")["removed"] is None
    for got, want in zip(index.load(tmp_path / "idx").search(database[::41], 15), before):
        np.testing.assert_array_equal(got, want)


def test_the_import_graph_of_tfhash_has_no_circle():
    graph = {}
    for path in TFHASH.rglob("*.py"):
        module = ".".join(("tfhash",) + path.relative_to(TFHASH).with_suffix("").parts).removesuffix(".__init__")
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):  # function-level imports count too
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tfhash"):
                imported |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names if a.name.startswith("tfhash")}
        graph[module] = imported
    modules = set(graph)
    edges = {m: {t for t in targets if t in modules and t != m and not m.startswith(t + ".")}
             for m, targets in graph.items()}
    # the package's own __init__ gathers the public names; circles through it are not circles of the code
    edges = {m: {t for t in targets if t != "tfhash"} for m, targets in edges.items() if m != "tfhash"}
    state = {}

    def visit(module, trail):
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                raise AssertionError("import circle: " + " -> ".join(trail + [module, target]))
            if target not in state:
                visit(target, trail + [module])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [])
    assert not (TFHASH / "index.py").exists()


# --- names, listings and folder updates ---------------------------------------------------------------


def _photos(folder, images):
    _write_images(folder, images, np.arange(len(images)) % 3)
    return sources.list_image_files(folder)


def test_the_listing_rule_hidden_files_case_and_linked_folders(pixels, tmp_path):
    photos = tmp_path / "photos"
    _photos(photos, np.round(pixels[:6] * 255) / 255)
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(photos / "UPPER.PNG")
    (photos / ".hidden.png").write_bytes((photos / "UPPER.PNG").read_bytes())
    (photos / ".cache").mkdir()
    (photos / ".cache" / "x.png").write_bytes((photos / "UPPER.PNG").read_bytes())
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "y.png").write_bytes((photos / "UPPER.PNG").read_bytes())
    (photos / "linked").symlink_to(tmp_path / "elsewhere")
    (photos / "file-link.png").symlink_to(photos / "UPPER.PNG")
    listing = sources.list_image_files(photos)
    assert listing == ["0/000.png", "0/003.png", "1/001.png", "1/004.png", "2/002.png", "2/005.png", "UPPER.PNG",
                       "file-link.png"]
    assert sources.open_source(str(photos), (5, 4, 1)).files == listing


def test_an_index_built_from_a_folder_names_its_items(pixels, tmp_path):
    images = np.round(pixels[:9] * 255) / 255
    listing = _photos(tmp_path / "photos", images)
    built = tfhash.build(ThresholdEncoder(), str(tmp_path / "photos"), tmp_path / "idx", batch_size=4,
                         progress=False)
    _, found = built.search(ThresholdEncoder().encode(images[4:5]), 1)
    assert built.names(found[0]) == ["1/004.png"]
    assert index.load(tmp_path / "idx").names(np.arange(9)) == listing
    with pytest.raises(ValueError, match="holds no item with id 99"):
        built.names([99])
    pytest.importorskip("faiss")
    in_faiss = tfhash.build(ThresholdEncoder(), str(tmp_path / "photos"), tmp_path / "faiss", backend="faiss",
                            progress=False)
    assert in_faiss.names(np.arange(9)) == listing and index.load(tmp_path / "faiss").names([8]) == [listing[8]]
    plain = tfhash.build(ThresholdEncoder(), pixels[:5], tmp_path / "plain", progress=False)
    assert plain.names([0, 4]) == [None, None]


def test_tfrecord_items_are_named_by_file_and_record_and_a_truncated_file_is_refused(pixels, tmp_path):
    import tensorflow as tf

    images = np.round(pixels[:6] * 255).astype(np.uint8)
    for part, chunk in enumerate((images[:4], images[4:])):
        with tf.io.TFRecordWriter(str(tmp_path / f"part-{part}.tfrecord")) as writer:
            for image in chunk:
                png = tf.io.encode_png(image).numpy()
                feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png]))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    built = tfhash.build(ThresholdEncoder(), str(tmp_path / "*.tfrecord"), tmp_path / "idx", progress=False)
    assert built.names([0, 3, 4, 5]) == ["part-0.tfrecord:0", "part-0.tfrecord:3", "part-1.tfrecord:0",
                                         "part-1.tfrecord:1"]
    data = (tmp_path / "part-1.tfrecord").read_bytes()
    (tmp_path / "part-1.tfrecord").write_bytes(data[:-10])
    with pytest.raises(ValueError, match=r"part-1.tfrecord' is a truncated or damaged TFRecord file"):
        tfhash.build(ThresholdEncoder(), str(tmp_path / "*.tfrecord"), tmp_path / "idx2", progress=False)


def test_a_resumed_build_refuses_a_folder_that_changed_naming_what_changed(pixels, tmp_path, monkeypatch):
    from tfhash import collection

    monkeypatch.setattr(collection, "FLUSH_SECONDS", 0.0)
    images = np.round(pixels[:20] * 255) / 255
    _photos(tmp_path / "photos", images)
    with pytest.raises(KeyboardInterrupt):
        tfhash.build(ThresholdEncoder(fail_after=2), str(tmp_path / "photos"), tmp_path / "idx", batch_size=4,
                     progress=False)
    (tmp_path / "photos" / "0" / "000.png").rename(tmp_path / "photos" / "0" / "zzz.png")  # same count, first, last
    with pytest.raises(ValueError, match=r"`source` changed since the interrupted build .*1 file\(s\) added "
                                         r"\(0/zzz.png\); 1 file\(s\) gone \(0/000.png\)"):
        tfhash.build(ThresholdEncoder(), str(tmp_path / "photos"), tmp_path / "idx", batch_size=4, progress=False)


def test_update_encodes_only_new_files_and_removes_gone_ones(pixels, tmp_path, capsys):
    images = np.round(pixels[:12] * 255) / 255
    _photos(tmp_path / "photos", images[:10])
    tfhash.build(ThresholdEncoder(), str(tmp_path / "photos"), tmp_path / "idx", progress=False)
    (tmp_path / "photos" / "0" / "003.png").unlink()
    (tmp_path / "photos" / "5").mkdir()
    for i in (10, 11):
        pixels_8bit = np.round(images[i, ..., 0] * 255).astype(np.uint8)
        Image.fromarray(pixels_8bit).save(tmp_path / "photos" / "5" / f"0{i}.png")
    encoder = ThresholdEncoder()
    updated = tfhash.build(encoder, str(tmp_path / "photos"), tmp_path / "idx", update=True)
    assert "2 added, 1 removed" in capsys.readouterr().out
    assert encoder.calls == 1  # one batch: the two new files only
    assert index.read_manifest(tmp_path / "idx")["details"]["update"] == {"added": 2, "removed": 1, "skipped": []}
    reopened = index.load(tmp_path / "idx")
    assert len(reopened) == 11 and sorted(reopened.names(reopened._live_ids())) == sources.list_image_files(
        tmp_path / "photos")
    _, found = reopened.search(ThresholdEncoder().encode(images[11:12]), 1)
    assert reopened.names(found[0]) == ["5/011.png"] and found[0, 0] == 11  # ids go on after the largest held
    assert len(updated) == 11


def test_encoders_that_give_non_finite_probabilities_are_refused():
    from tfhash import serving
    from tfhash.encoding import encode_in_batches

    def broken(batch):
        return {"codes": np.zeros((len(batch), 1), np.uint8), "probabilities": np.full((len(batch), 8), np.nan)}

    with pytest.raises(ValueError, match=r"non-finite probabilities for items 4 to 7 of `x`"):
        encode_in_batches(lambda b: broken(b) if b[0, 0] >= 4 else {
            "codes": np.zeros((len(b), 1), np.uint8), "probabilities": np.zeros((len(b), 8))},
            np.arange(12, dtype=np.float32).reshape(12, 1), 4, 8)

    class Hand:
        path, item_shape, bits = "hand.tflite", (2,), 8

        def _serve_batch(self, batch):
            return broken(batch)

    with pytest.raises(ValueError, match=r"hand.tflite' gives non-finite probabilities .* converted by hand"):
        serving._check_serves(Hand())


def test_a_glob_of_mixed_file_kinds_is_refused(tmp_path):
    (tmp_path / "part-0.tfrecord").write_bytes(b"")
    np.save(tmp_path / "part-1.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"matches files of other kinds \(part-1.npy\)"):
        sources.open_source(str(tmp_path / "part-*"), (5, 4, 1))


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_an_empty_index_saves_loads_takes_codes_and_empties_again(tmp_path, backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    query = np.ones((1, 3), np.uint8)
    index.make_index(BITS, backend).add(np.zeros((0, 3), np.uint8), ids=[]).save(tmp_path / "idx")
    empty = index.load(tmp_path / "idx")
    assert len(empty) == 0 and empty.search(query, 5)[1].shape == (1, 0) and empty.remove([]) == 0
    empty.add(np.ones((3, 3), np.uint8)).save()
    assert index.load(tmp_path / "idx").search(query, 5)[1].tolist() == [[0, 1, 2]]
    emptied = index.load(tmp_path / "idx")
    emptied.remove([0, 1, 2])
    emptied.save()
    assert len(index.load(tmp_path / "idx")) == 0
    emptied.compact().save()
    reloaded = index.load(tmp_path / "idx")
    assert len(reloaded) == 0 and reloaded.range_search(query, 3)[0].tolist() == [0, 0]
