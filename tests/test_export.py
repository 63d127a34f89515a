"""Export: SavedModel (TF Serving layout), TFLite, loading back; exactness and atomic writes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfhash
from tests.helpers import MNIST_10K, ROOT
from tfhash import codes, export, metrics


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A HashGAN trained briefly on mnist-10k items (digits when the shared data is absent), and the split."""
    if os.path.isdir(MNIST_10K):
        x, y = tfhash.datasets.load_mnist_idx(os.path.join(MNIST_10K, "t10k-images-idx3-ubyte.gz"),
                                              os.path.join(MNIST_10K, "t10k-labels-idx1-ubyte.gz"))
        split = tfhash.datasets.make_split(x, y, queries_per_class=100, seed=0)
    else:
        split = tfhash.datasets.load("digits", queries_per_class=10, seed=0)
    # 2,000 training items: the exports are checked against the in-memory codes, not for quality.
    hasher = tfhash.fit("hashgan", split.train_x[:2000], bits=20, epochs=1, batch_size=100, seed=0, verbose=0)
    return hasher, split


FRESH_PROCESS = """
import sys, numpy as np, tfhash
hasher = tfhash.load(sys.argv[1])
np.save(sys.argv[3], hasher.encode(np.load(sys.argv[2])))
"""


@pytest.mark.e2e
def test_saved_model_codes_are_bit_identical_in_a_fresh_process(trained, tmp_path):
    hasher, split = trained
    path = hasher.export(str(tmp_path / "encoder"))
    np.save(tmp_path / "queries.npy", split.query_x)
    script = tmp_path / "encode.py"
    script.write_text(FRESH_PROCESS)
    result = subprocess.run([sys.executable, str(script), path, str(tmp_path / "queries.npy"),
                             str(tmp_path / "codes.npy")], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    exported = np.load(tmp_path / "codes.npy")
    in_memory = hasher.encode(split.query_x)
    assert exported.dtype == np.uint8 and exported.shape == (split.query_x.shape[0], 3)
    np.testing.assert_array_equal(exported, in_memory)
    # The same codes give the same mAP, from the export alone.
    loaded = tfhash.load(path)
    database = loaded.encode(split.database_x)
    np.testing.assert_array_equal(database, hasher.encode(split.database_x))
    assert metrics.mean_average_precision(exported, database, split.query_y, split.database_y) == \
        metrics.mean_average_precision(in_memory, hasher.encode(split.database_x), split.query_y, split.database_y)
    rows = loaded.evaluate(split, baselines=(), log=None)
    assert rows[0]["method"] == "hashgan" and 0 <= rows[0]["mAP"] <= 1
    _, ids = loaded.index(split.database_x).search(exported[:2], 3)
    assert ids.shape == (2, 3)


@pytest.mark.e2e  # several fits or an export: the end-to-end tier
def test_signatures_metadata_and_pixel_input(trained, tmp_path):
    hasher, split = trained
    path = hasher.export(str(tmp_path / "encoder"))
    shown = subprocess.run(["saved_model_cli", "show", "--dir", path, "--all"], capture_output=True, text=True,
                           timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    for text in ("signature_def['serving_default']", "signature_def['serving_pixels']", "inputs['inputs']",
                 "inputs['pixels']", "outputs['codes']", "outputs['probabilities']", "dtype: DT_UINT8"):
        assert text in shown.stdout, text
    # Metadata is plain JSON, readable without TensorFlow.
    with open(os.path.join(path, "assets", "tfhash.json")) as f:
        meta = json.load(f)
    assert meta["scheme"] == "hashgan" and meta["bits"] == 20 and meta["code_bytes"] == 3
    assert meta["bit_order"] == "lsb-first" and meta["threshold"] == 0.5 and meta["input_range"] == [0.0, 1.0]
    assert meta["tfhash_version"] == tfhash.__version__
    # Raw uint8 pixels: the graph divides by 255, so integer-valued images give the same codes.
    loaded = tf.saved_model.load(path)
    pixels = np.round(split.query_x[:50] * 255).astype(np.uint8)
    from_pixels = loaded.signatures["serving_pixels"](pixels=tf.constant(pixels))["codes"].numpy()
    np.testing.assert_array_equal(from_pixels, hasher.encode(pixels.astype(np.float32) / 255.0))


def test_tf_serving_layout_and_models_config(trained, tmp_path):
    hasher, _ = trained
    first = export.export_serving(hasher, str(tmp_path), "digits_hash")
    second = export.export_serving(hasher, str(tmp_path), "digits_hash")
    assert first.endswith(os.path.join("digits_hash", "1")) and second.endswith(os.path.join("digits_hash", "2"))
    assert os.path.isfile(os.path.join(first, "saved_model.pb"))
    config = (tmp_path / "models.config").read_text()
    assert 'name: "digits_hash"' in config and 'base_path: "/models/digits_hash"' in config
    assert not [p for p in os.listdir(tmp_path / "digits_hash") if p.startswith(".")]  # no leftovers


@pytest.mark.parametrize("quantization", [None, "float16", "dynamic"])
def test_tflite_codes_match_up_to_threshold_ties(trained, tmp_path, quantization):
    from ai_edge_litert.interpreter import Interpreter

    hasher, split = trained
    path = export.export_tflite(hasher, str(tmp_path / "encoder.tflite"), quantization=quantization)
    interpreter = Interpreter(model_path=path)
    x = split.query_x[:200]
    runner = interpreter.get_signature_runner()
    out = runner(inputs=x)
    assert out["codes"].dtype == np.uint8 and out["codes"].shape == (len(x), 3)  # 100 queries on digits
    probabilities = hasher.predict_probabilities(x)
    if quantization is None:
        differing = codes.unpack(out["codes"], 20) != codes.unpack(hasher.encode(x), 20)
        assert differing.mean() <= 0.001
        assert np.all(np.abs(probabilities[differing] - 0.5) < 1e-3)
    else:  # quantised weights: close, not exact
        assert np.abs(out["probabilities"] - probabilities).max() < 0.1


def test_bad_export_input_is_refused(trained, tmp_path):
    hasher, _ = trained
    untrained = tfhash.Hasher(tfhash.schemes.get("hashgan")(bits=8, input_shape=(8, 8, 1)))
    untrained.model.compile()
    with pytest.raises(ValueError, match="untrained"):
        untrained.export(str(tmp_path / "a"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="`path` must be a directory to create, got an existing file"):
        hasher.export(str(tmp_path / "file"))
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="exists and is not empty; pass overwrite=True"):
        hasher.export(str(target))
    assert (target / "keep.txt").read_text() == "user data"
    with pytest.raises(ValueError, match="must be a tfhash export"):
        tfhash.load(str(tmp_path))
    with pytest.raises(ValueError, match="`quantization` must be one of"):
        export.export_tflite(hasher, str(tmp_path / "x.tflite"), quantization="int4")


def test_interrupted_export_leaves_nothing_at_the_target(trained, tmp_path, monkeypatch):
    hasher, _ = trained
    real_save = tf.saved_model.save

    def save_then_die(obj, directory, signatures=None):
        real_save(obj, directory, signatures=signatures)  # files are written, then the process is "killed"
        raise KeyboardInterrupt

    monkeypatch.setattr(tf.saved_model, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        hasher.export(str(tmp_path / "encoder"))
    assert not (tmp_path / "encoder").exists()
    assert os.listdir(tmp_path) == []  # the temporary directory is gone too
    monkeypatch.setattr(tf.saved_model, "save", real_save)
    # overwrite=True replaces an existing export in one rename
    hasher.export(str(tmp_path / "encoder"))
    hasher.export(str(tmp_path / "encoder"), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["encoder"]


@pytest.mark.e2e
def test_export_command_line(trained, tmp_path):
    hasher, split = trained
    ckpt = str(tmp_path / "ckpt")
    hasher.save(ckpt)
    result = subprocess.run([sys.executable, "-m", "export.export_model", f"--checkpoint_dir={ckpt}",
                             "--format=serving", f"--output={tmp_path / 'serving'}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_array_equal(tfhash.load(str(tmp_path / "serving" / "tfhash" / "1")).encode(split.query_x[:20]),
                                  hasher.encode(split.query_x[:20]))


def test_load_runs_a_tflite_export_with_the_litert_interpreter(trained, tmp_path):
    hasher, split = trained
    path = export.export_tflite(hasher, str(tmp_path / "encoder.tflite"))
    on_device = tfhash.load(path)
    assert isinstance(on_device, tfhash.serving.TFLiteHasher)
    assert on_device.bits == hasher.bits and on_device.item_shape == tuple(hasher.model.item_shape)
    x = split.query_x[:300]
    differing = (codes.unpack(on_device.encode(x, batch_size=128), hasher.bits)
                 != codes.unpack(hasher.encode(x), hasher.bits))
    assert differing.mean() <= 0.001
    with pytest.raises(ValueError, match="items of shape"):
        on_device.encode(x[:, :4])


def test_the_serving_graph_checks_item_shape_and_finiteness(trained, tmp_path):
    hasher, split = trained
    serve = tf.saved_model.load(hasher.export(str(tmp_path / "encoder"))).signatures
    shape = tuple(hasher.model.item_shape)
    good = split.query_x[:2]
    np.testing.assert_array_equal(serve["serving_default"](inputs=tf.constant(good))["codes"].numpy(),
                                  hasher.encode(good))
    flat = int(np.prod(shape))
    for wrong in [(2, flat), (4,) + shape[:-1], (2, shape[0] * 2, shape[1] * 2, 3), (2,) + shape + (1,)]:
        for signature, name, dtype in (("serving_default", "inputs", np.float32),
                                       ("serving_pixels", "pixels", np.uint8)):
            with pytest.raises(tf.errors.InvalidArgumentError,
                               match=rf"`{name}` must be \[batch, {', '.join(map(str, shape))}\] items; got shape.*"
                                     + r"\s".join(map(str, wrong[:3]))):
                serve[signature](**{name: tf.zeros(wrong, dtype)})
    for bad in (np.nan, np.inf):
        nan = good.copy()
        nan[1, 0] = bad
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"`inputs` must be finite \(no NaN or inf values\)"):
            serve["serving_default"](inputs=tf.constant(nan))


def test_damaged_or_foreign_exports_are_refused_at_load(trained, tmp_path):
    hasher, split = trained
    path = hasher.export(str(tmp_path / "encoder"))
    broken = {}
    for name, damage in (("pb", "saved_model.pb"), ("variables", "variables/variables.data-00000-of-00001")):
        copy = tmp_path / name
        subprocess.run(["cp", "-r", path, str(copy)], check=True)
        target = copy / damage
        with open(target, "r+b") as f:
            f.truncate(os.path.getsize(target) // 3)
        broken[name] = copy
    for copy in broken.values():
        with pytest.raises(ValueError, match=r"holds a damaged SavedModel|cannot encode an item"):
            tfhash.load(str(copy))
    # A foreign SavedModel with a copied tfhash.json: refused at load, not at the first encode.
    class Foreign(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 5], tf.float32, name="inputs")])
        def serve(self, inputs):
            return {"codes": tf.zeros([tf.shape(inputs)[0], 9], tf.uint8), "probabilities": inputs}

    foreign = tmp_path / "foreign"
    module = Foreign()
    tf.saved_model.save(module, str(foreign), signatures={"serving_default": module.serve})
    (foreign / "assets").mkdir(exist_ok=True)
    (foreign / "assets" / "tfhash.json").write_text((tmp_path / "encoder" / "assets" / "tfhash.json").read_text())
    with pytest.raises(ValueError, match=r"foreign.* cannot encode an item of shape|is not the tfhash export"):
        tfhash.load(str(foreign))
    # A garbage .tflite, and a truncated real one.
    (tmp_path / "garbage.tflite").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"is not a TFLite model \(no TFL3 identifier"):
        tfhash.load(str(tmp_path / "garbage.tflite"))
    tflite = export.export_tflite(hasher, str(tmp_path / "model.tflite"))
    with open(tflite, "r+b") as f:
        f.truncate(os.path.getsize(tflite) // 2)
    with pytest.raises(ValueError, match=r"damaged TFLite model|cannot encode an item|is not a tfhash TFLite"):
        tfhash.load(tflite)


def test_uint8_pixels_get_one_code_in_memory_saved_model_and_tflite(trained, tmp_path):
    hasher, split = trained
    pixels = np.round(split.query_x[:40] * 255).astype(np.uint8)
    in_memory = hasher.encode(pixels)
    np.testing.assert_array_equal(in_memory, hasher.encode(pixels.astype(np.float32) / 255.0))
    path = hasher.export(str(tmp_path / "encoder"))
    np.testing.assert_array_equal(tfhash.load(path).encode(pixels), in_memory)
    serve = tf.saved_model.load(path).signatures["serving_pixels"]
    np.testing.assert_array_equal(serve(pixels=tf.constant(pixels))["codes"].numpy(), in_memory)
    # A TFLite export carries its description, so it checks inputs as the SavedModel does, whatever its name.
    on_device = tfhash.load(export.export_tflite(hasher, str(tmp_path / "model.bin")))
    assert on_device.metadata == export.read_metadata(path) and on_device.scheme == hasher.scheme
    from_pixels = codes.unpack(on_device.encode(pixels), hasher.bits)
    assert (from_pixels != codes.unpack(in_memory, hasher.bits)).mean() <= 0.001
    with pytest.raises(ValueError, match=r"`x` must hold images with values in \[0, 1\].*divide by 255"):
        on_device.encode(pixels.astype(np.float32))
    # A TFLite model without that description refuses uint8 rather than guess its scale.
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(export._tflite_flatbuffer(hasher, None))
    with pytest.raises(ValueError, match="uint8.*pixels / 255"):
        tfhash.load(str(bare)).encode(pixels)


def test_exports_carry_the_encoders_fingerprint(trained, tmp_path):
    hasher, _ = trained
    saved = tfhash.load(hasher.export(str(tmp_path / "encoder")))
    tflite = tfhash.load(export.export_tflite(hasher, str(tmp_path / "encoder.tflite")))
    quantised = tfhash.load(export.export_tflite(hasher, str(tmp_path / "q.tflite"), quantization="float16"))
    assert len(hasher.fingerprint) == 64 and saved.fingerprint == tflite.fingerprint == hasher.fingerprint
    assert quantised.fingerprint != hasher.fingerprint  # its codes may differ


def test_an_index_built_through_a_tflite_export_holds_its_codes(trained, tmp_path):
    hasher, split = trained
    path = export.export_tflite(hasher, str(tmp_path / "encoder.tflite"))
    items = split.query_x[:300]
    built = tfhash.build(path, items, tmp_path / "index", batch_size=64, progress=False)
    np.testing.assert_array_equal(built._stored()[0], tfhash.load(path).encode(items))
    tfhash.index.load(tmp_path / "index", encoder=hasher)  # one fingerprint for the model and its exports
