"""Encoding on Apache Beam (DirectRunner, two worker processes) against the local streaming build: `pytest -m beam`."""

import json
import subprocess
import sys

import numpy as np
import pytest
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
    local = tfhash.index.build(export, items, tmp_path / "local", progress=False)
    for name in ("codes.bin", "ids.bin"):
        assert (beam_index / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    assert len(local) == 3000


def test_images_on_beam_skip_and_count_a_corrupt_file_like_the_local_build(exported, tmp_path):
    export, x = exported
    folder = tmp_path / "photos"
    for i, image in enumerate(x[:400]):
        (folder / str(i % 4)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(folder / str(i % 4) / f"{i:04d}.png")
    (folder / "2" / "0100-broken.png").write_bytes(b"not an image")
    beam_index, stdout = _encode_beam(tmp_path, export, str(folder / "*" / "*.png"), "images")
    assert "skipped 1 item(s) that could not be read" in stdout
    with pytest.warns(UserWarning, match="broken.png"):
        tfhash.index.build(export, str(folder), tmp_path / "local", progress=False)
    for name in ("codes.bin", "ids.bin"):
        assert (beam_index / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
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
