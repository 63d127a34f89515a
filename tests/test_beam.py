"""Encoding on Apache Beam (DirectRunner, two worker processes) against the local streaming build: `pytest -m beam`."""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import tfhash
from tests.helpers import ROOT

pytestmark = pytest.mark.beam
pytest.importorskip("apache_beam")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    x, _ = tfhash.datasets.load_digits()
    hasher = tfhash.fit("greedyhash", x[:500], bits=32, epochs=1, seed=0, verbose=0)
    return hasher.export(str(tmp_path_factory.mktemp("export") / "encoder")), x


def _encode_beam(tmp_path, export, pattern, name):
    output, index_path = tmp_path / f"{name}-shards", tmp_path / f"{name}-index"
    command = [sys.executable, "-m", "trainers.encode_beam", f"--export={export}", f"--input={pattern}",
               f"--output={output}", f"--index={index_path}", "--runner=DirectRunner", "--direct_num_workers=2",
               "--direct_running_mode=multi_processing"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return index_path, result.stdout


def test_two_beam_workers_write_the_bytes_of_the_local_build(exported, tmp_path):
    export, x = exported
    items = np.tile(x, (2, 1, 1, 1))[:3000]  # a few thousand items in three .npy shards
    for i, part in enumerate(np.array_split(items, 3)):
        np.save(tmp_path / f"shard-{i}.npy", part)
    beam_index, _ = _encode_beam(tmp_path, export, str(tmp_path / "shard-*.npy"), "npy")
    local = tfhash.build(export, items, tmp_path / "local", progress=False)
    for name in ("codes-000000.bin", "ids-000000.bin"):
        assert (beam_index / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    assert len(local) == 3000


def test_images_on_beam_skip_and_count_a_corrupt_file_like_the_local_build(exported, tmp_path):
    export, x = exported
    folder = tmp_path / "photos"
    for i, image in enumerate(x[:400]):
        (folder / str(i % 4)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(folder / str(i % 4) / f"{i:04d}.png")
    (folder / "2" / "0100-broken.png").write_bytes(b"not an image")
    (folder / ".thumbnails").mkdir()  # hidden: left out by the one listing rule, on Beam as locally
    (folder / ".thumbnails" / "0000.png").write_bytes((folder / "0" / "0000.png").read_bytes())
    (folder / "3" / "0399.PNG").write_bytes((folder / "0" / "0000.png").read_bytes())  # upper case: listed
    beam_index, stdout = _encode_beam(tmp_path, export, str(folder), "images")
    assert "skipped 1 item(s) that could not be read" in stdout
    with pytest.warns(UserWarning, match="broken.png"):
        local = tfhash.build(export, str(folder), tmp_path / "local", progress=False)
    for name in ("codes-000000.bin", "ids-000000.bin"):
        assert (beam_index / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    merged = tfhash.index.load(beam_index)
    ids = local._live_ids()
    assert merged.names(ids) == local.names(ids) and "3/0399.PNG" in local.names(ids)
    skipped = tfhash.index.read_manifest(beam_index)["details"]["skipped"]
    assert len(skipped) == 1 and skipped[0]["item"].endswith("0100-broken.png")
    assert skipped[0]["id"] == tfhash.index.read_manifest(tmp_path / "local")["details"]["skipped"][0]["id"]


def test_shards_are_never_written_over_someone_elses_files(exported, tmp_path):
    import tfhash.beam

    export, x = exported
    np.save(tmp_path / "shard-0.npy", x[:10])
    output = tmp_path / "out"
    output.mkdir()
    (output / "encoder.json").write_text("mine")
    (output / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds files an encoding run does not write \(notes.txt\)"):
        tfhash.beam.EncodeToShards(export, str(tmp_path / "shard-*.npy"), str(output))
    assert (output / "encoder.json").read_text() == "mine"
    (output / "notes.txt").unlink()
    (output / "codes-00000-of-00002.tfrecord").write_bytes(b"")
    with pytest.raises(ValueError, match=r"holds the files of another encoding run \(codes-00000-of-00002"):
        tfhash.beam.EncodeToShards(export, str(tmp_path / "shard-*.npy"), str(output))
    assert (output / "encoder.json").read_text() == "mine"


def test_merging_shards_of_another_width_names_the_sizes_found(tmp_path):
    import tensorflow as tf

    import tfhash.beam

    output = tmp_path / "out"
    output.mkdir()
    (output / "encoder.json").write_text(json.dumps({"scheme": "hashgan", "bits": 32, "fingerprint": "f"}))
    with tf.io.TFRecordWriter(str(output / "codes-00000-of-00001.tfrecord")) as writer:
        for item in range(3):
            writer.write(np.int64(item).tobytes() + bytes(8))  # 64-bit codes under a 32-bit encoder
    with pytest.raises(ValueError, match=r"records of \[16\] bytes; expected 12"):
        tfhash.beam.merge_shards(output, tmp_path / "index")
    assert not (tmp_path / "index").exists()


def _write_shards(output, ids, codes, shards, bits=12, skipped=()):
    """Hand-written ``codes-SSSSS-of-NNNNN.tfrecord`` shards of (id, code) records, as EncodeToShards writes."""
    import tensorflow as tf

    output.mkdir(exist_ok=True)
    (output / "encoder.json").write_text(json.dumps({"scheme": "greedyhash", "bits": bits, "fingerprint": "f"}))
    for shard, part in enumerate(np.array_split(np.arange(len(ids)), shards)):
        with tf.io.TFRecordWriter(str(output / f"codes-{shard:05d}-of-{shards:05d}.tfrecord")) as writer:
            for i in part:
                writer.write(np.int64(ids[i]).astype("<i8").tobytes() + codes[i].tobytes())
    if skipped:
        (output / "skipped-00000-of-00001.jsonl").write_text("".join(json.dumps(s) + "\n" for s in skipped))


@settings(max_examples=15)
@given(n=st.integers(0, 60), shards=st.integers(1, 4), rows_in_memory=st.integers(1, 70), seed=st.integers(0, 999))
def test_merging_in_bounded_runs_writes_every_item_once_sorted_by_id(n, shards, rows_in_memory, seed):
    import tfhash.beam

    rng = np.random.default_rng(seed)
    ids = rng.choice(10 * n + 1, n, replace=False)  # unique, shuffled, sparse
    codes = rng.integers(0, 256, (n, 2), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        output = pathlib.Path(tmp) / "out"
        _write_shards(output, ids, codes, shards, skipped=[{"id": 3, "item": "b", "error": "x"}])
        merged = tfhash.beam.merge_shards(output, pathlib.Path(tmp) / "index", rows_in_memory=rows_in_memory)
        order = np.argsort(ids)
        np.testing.assert_array_equal(merged._stored()[1], ids[order])
        np.testing.assert_array_equal(merged._stored()[0], codes[order])
        manifest = tfhash.index.read_manifest(pathlib.Path(tmp) / "index")
        assert manifest["count"] == n and manifest["details"]["skipped"][0]["item"] == "b"
        assert sorted(os.listdir(tmp)) == ["index", "out"]  # no run files or working directory left


def test_merging_refuses_shards_of_two_runs_and_ids_seen_twice(tmp_path):
    import tfhash.beam

    codes = np.zeros((6, 2), np.uint8)
    output = tmp_path / "out"
    _write_shards(output, np.arange(6), codes, 2)
    _write_shards(output, np.arange(6), codes, 3)  # a second run with another shard count, same directory
    with pytest.raises(ValueError, match=r"not one complete set \(2 of 2; 3 of 3\)"):
        tfhash.beam.merge_shards(output, tmp_path / "index")
    (output / "codes-00000-of-00002.tfrecord").unlink()
    (output / "codes-00001-of-00002.tfrecord").unlink()
    (output / "codes-00002-of-00003.tfrecord").unlink()  # a run that did not finish
    with pytest.raises(ValueError, match=r"not one complete set \(2 of 3\)"):
        tfhash.beam.merge_shards(output, tmp_path / "index")
    _write_shards(output, np.array([0, 1, 2, 3, 2, 5]), codes, 3)
    with pytest.raises(ValueError, match="holds id 2 twice"):
        tfhash.beam.merge_shards(output, tmp_path / "index", rows_in_memory=2)
    _write_shards(output, np.array([0, 1, 2, 3, -4, 5]), codes, 3)
    with pytest.raises(ValueError, match="holds id -4; ids must be non-negative"):
        tfhash.beam.merge_shards(output, tmp_path / "index", rows_in_memory=2)
    assert sorted(os.listdir(tmp_path)) == ["out"]  # nothing written beside it
    _write_shards(output, np.arange(6), codes, 3)
    tfhash.beam.merge_shards(output, tmp_path / "index")
    with pytest.raises(ValueError, match="pass overwrite=True"):
        tfhash.beam.merge_shards(output, tmp_path / "index")
    assert len(tfhash.beam.merge_shards(output, tmp_path / "index", overwrite=True)) == 6


def test_a_refused_index_stops_the_command_before_any_encoding(exported, tmp_path, capsys):
    from trainers import encode_beam

    export, x = exported
    np.save(tmp_path / "shard-0.npy", x[:10])
    user = tmp_path / "photos.index"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match=r"error: `path` .*photos.index' exists and is not empty"):
        encode_beam.main([f"--export={export}", f"--input={tmp_path / 'shard-*.npy'}",
                          f"--output={tmp_path / 'out'}", f"--index={user}", "--runner=DirectRunner"])
    with pytest.raises(SystemExit, match=r"--rows_in_memory.* 0"):
        encode_beam.main([f"--export={export}", f"--input={tmp_path / 'shard-*.npy'}",
                          f"--output={tmp_path / 'out'}", f"--index={tmp_path / 'new.index'}", "--rows_in_memory=0"])
    assert not (tmp_path / "out").exists() and (user / "notes.txt").read_text() == "mine"


def test_merge_benchmark_measures_each_run_size_and_finds_the_same_bytes(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmarks.merge", "--items", "5000", "--bits", "20",
                             "--rows-in-memory", "700", "--results", str(tmp_path / "r.jsonl")],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["identical"] is True and [row["rows_in_memory"] for row in record["rows"]] == [700, 5000]
    assert [row["runs"] for row in record["rows"]] == [8, 1] and record["rows"][1]["everything"] is True
    assert all(row["items"] == 5000 and row["seconds"] > 0 for row in record["rows"])
    assert "runs of 700" in result.stdout and "all in one run" in result.stdout
    assert "| 700 | 8 |" in result.stdout  # BENCHMARKS.md's table, filled
    assert json.loads((tmp_path / "r.jsonl").read_text())["command"].startswith("python -m benchmarks.merge")


@pytest.mark.parametrize("order", ["C", "F"])
def test_a_block_of_an_npy_shard_is_read_alone_with_its_first_id(tmp_path, order):
    import tfhash.beam

    array = np.asarray(np.arange(700 * 6, dtype=np.float32).reshape(700, 3, 2), order=order)
    np.save(tmp_path / "shard.npy", array)
    blocks = list(tfhash.beam._npy_blocks((1000, str(tmp_path / "shard.npy"))))
    assert [b[0] for b in blocks] == [1000, 1256, 1512] and blocks[-1][2:] == (512, 700)
    for block in blocks:
        first, rows = tfhash.beam._read_npy_block(block)
        np.testing.assert_array_equal(rows, array[block[2]:block[3]])
        assert first == block[0] and rows.dtype == np.float32


def test_bad_outputs_and_mixed_inputs_are_refused_before_any_encoding(exported, tmp_path):
    import tfhash.beam

    export, x = exported
    np.save(tmp_path / "shard-0.npy", x[:10])
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "shard-1.png")
    (tmp_path / "file").write_text("mine")
    with pytest.raises(ValueError, match=r"`output` .*file' is a file"):
        tfhash.beam.EncodeToShards(export, str(tmp_path / "shard-0.npy"), str(tmp_path / "file"))
    with pytest.raises(ValueError, match=r"`output` must name a directory for the shards, got ''"):
        tfhash.beam.EncodeToShards(export, str(tmp_path / "shard-0.npy"), "")
    with pytest.raises(ValueError, match=r"`input` must name files of one kind .* got images, npy"):
        tfhash.beam.EncodeToShards(export, str(tmp_path / "shard-*"), str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"`output` .*file' must be the directory of an encoding run's shards; it is "
                                         r"a file"):
        tfhash.beam.merge_shards(tmp_path / "file", tmp_path / "index")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"holds no encoder.json: not the output of an encoding run"):
        tfhash.beam.merge_shards(tmp_path / "empty", tmp_path / "index")
    assert (tmp_path / "file").read_text() == "mine" and not (tmp_path / "index").exists()


def test_two_runs_started_at_once_on_one_output_have_one_owner(exported, tmp_path, monkeypatch):
    import tfhash.beam

    export, x = exported
    np.save(tmp_path / "shard-0.npy", x[:10])
    output = tmp_path / "out"
    first = tfhash.beam.EncodeToShards(export, str(tmp_path / "shard-0.npy"), str(output))
    # the second run looked before the first claimed the directory: its claim is what fails
    monkeypatch.setattr(tfhash.beam.FileSystems, "exists", staticmethod(lambda path: False))
    monkeypatch.setattr(tfhash.beam.FileSystems, "mkdirs", staticmethod(lambda path: None))
    with pytest.raises(FileExistsError, match="claimed by another encoding run meanwhile; nothing was written"):
        tfhash.beam.EncodeToShards(export, str(tmp_path / "shard-0.npy"), str(output))
    assert json.loads((output / "encoder.json").read_text())["export"] == first.export
