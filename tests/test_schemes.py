"""The shared check suite every registered scheme passes, plus HashGAN specifics."""

import os

import numpy as np
import pytest
import tensorflow as tf

import tfhash
from tfhash import schemes

SCHEMES = schemes.names()
# Small inputs each scheme accepts, for fast checks.
SMALL_INPUT = {"hashgan": (8, 8, 1), "sigah": (24,)}


def _data(name, n=64, seed=0):
    shape = SMALL_INPUT[name]
    return np.random.default_rng(seed).random((n,) + shape).astype(np.float32)


@pytest.mark.parametrize("name", SCHEMES)
def test_config_round_trip(name):
    model = schemes.get(name)(bits=12, input_shape=SMALL_INPUT[name], seed=3)
    config = model.get_config()
    rebuilt = schemes.get(name).from_config(config)
    assert rebuilt.get_config() == config
    assert [v.shape for v in rebuilt.weights] == [v.shape for v in model.weights]


@pytest.mark.parametrize("name", SCHEMES)
def test_compile_with_defaults_builds_one_optimizer_per_player(name):
    model = schemes.get(name)(bits=8, input_shape=SMALL_INPUT[name])
    model.compile()
    assert set(model.scheme_optimizers) == set(model.players())
    for player, optimizer in model.scheme_optimizers.items():
        assert optimizer.built and len(optimizer.variables) > 1, player


@pytest.mark.parametrize("name", SCHEMES)
def test_short_fit_has_finite_losses_and_packed_codes(name):
    x = _data(name)
    hasher = tfhash.fit(name, x, bits=12, epochs=2, batch_size=16, verbose=0)
    logs = hasher.history.history
    assert logs and all(np.all(np.isfinite(v)) for v in logs.values())
    encoded = hasher.encode(x)
    assert encoded.dtype == np.uint8 and encoded.shape == (64, 2)
    assert np.all(encoded[:, 1] < 16)  # padding bits are zero


@pytest.mark.parametrize("name", SCHEMES)
def test_fixed_seed_is_deterministic(name):
    x = _data(name)
    first = tfhash.fit(name, x, bits=8, epochs=1, batch_size=16, seed=5, verbose=0)
    second = tfhash.fit(name, x, bits=8, epochs=1, batch_size=16, seed=5, verbose=0)
    np.testing.assert_allclose(first.predict_probabilities(x), second.predict_probabilities(x), atol=1e-6)
    other = tfhash.fit(name, x, bits=8, epochs=1, batch_size=16, seed=6, verbose=0)
    assert not np.allclose(first.predict_probabilities(x), other.predict_probabilities(x), atol=1e-6)


@pytest.mark.parametrize("name", SCHEMES)
def test_encoder_model_is_plain_and_matches_encode(name):
    model = schemes.get(name)(bits=8, input_shape=SMALL_INPUT[name])
    encoder = model.encoder_model()
    x = _data(name, n=5)
    np.testing.assert_allclose(np.asarray(encoder(x)), model.predict_probabilities(x), atol=1e-6)
    adversarial_weights = {id(v) for player in ("generator", "discriminator")
                           for v in model.players().get(player, [])}
    encoder_weights = {id(v) for v in encoder.weights}
    if name == "hashgan":  # D and E share their trunk by design (Sec. 3.1): only the generator is apart
        adversarial_weights = {id(v) for v in model.players()["generator"]}
    assert not adversarial_weights & encoder_weights


@pytest.mark.parametrize("name", SCHEMES)
def test_checkpoint_round_trip_and_exports_give_the_same_codes(name, tmp_path):
    x = _data(name)
    hasher = tfhash.fit(name, x, bits=12, epochs=1, batch_size=16, seed=2, verbose=0,
                        checkpoint_dir=str(tmp_path / "ckpt"))
    expected = hasher.encode(x)
    np.testing.assert_array_equal(tfhash.Hasher.load(str(tmp_path / "ckpt")).encode(x), expected)
    exported = tfhash.load(hasher.export(str(tmp_path / "saved")))
    np.testing.assert_array_equal(exported.encode(x), expected)
    on_device = tfhash.load(tfhash.export.export_tflite(hasher, str(tmp_path / "encoder.tflite")))
    differing = tfhash.codes.unpack(on_device.encode(x), 12) != tfhash.codes.unpack(expected, 12)
    assert differing.mean() <= 0.01


def test_bad_input_is_refused_before_training(tmp_path):
    x = _data("hashgan")
    with pytest.raises(ValueError, match="registered schemes \\['hashgan'"):
        tfhash.fit("nope", x)
    with pytest.raises(ValueError, match="`bits` must be a positive integer"):
        tfhash.fit("hashgan", x, bits=0)
    with pytest.raises(ValueError, match="unknown hyperparameter\\(s\\) \\['weight_entropyy'\\].*known"):
        tfhash.fit("hashgan", x, weight_entropyy=1.0)
    with pytest.raises(ValueError, match="at least one batch \\(100 items\\), got 64"):
        tfhash.fit("hashgan", x, batch_size=100)
    bad = x.copy()
    bad[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="`x` must be finite, got 1 NaN/inf"):
        tfhash.fit("hashgan", bad, batch_size=16)
    with pytest.raises(ValueError, match="fit neither HashGAN network"):
        tfhash.fit("hashgan", np.zeros((40, 64, 64, 3), np.float32), batch_size=16)
    with pytest.raises(ValueError, match="`weight_entropy` must be a non-negative number"):
        tfhash.fit("hashgan", x, batch_size=16, weight_entropy=-1.0)


def test_nan_loss_stops_training_naming_the_term(tmp_path):
    x = _data("hashgan")
    # A huge learning rate drives the losses to inf/NaN within a few steps.
    with pytest.raises(FloatingPointError, match="non-finite"):
        tfhash.fit("hashgan", x, bits=8, epochs=3, batch_size=16, verbose=0, checkpoint_dir=str(tmp_path),
                   learning_rate=1e30, final_learning_rate=1e30)


class _Interrupt(Exception):
    pass


def _interrupt_at(epoch_to_stop, batch_to_stop):
    import keras

    class Interrupt(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch = None

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == epoch_to_stop and batch == batch_to_stop:
                raise _Interrupt()

    return Interrupt()


def test_interrupted_run_resumes_with_model_and_both_optimizers(tmp_path):
    x = _data("hashgan")
    ckpt = str(tmp_path / "run")
    # Plan 3 epochs of 4 steps; die in the middle of epoch 2 (after epoch 1's checkpoint).
    with pytest.raises(_Interrupt):
        tfhash.fit("hashgan", x, bits=8, epochs=3, batch_size=16, seed=1, verbose=0, checkpoint_dir=ckpt,
                   callbacks=[_interrupt_at(1, 1)])
    resumed = tfhash.fit("hashgan", x, bits=8, epochs=3, batch_size=16, seed=1, verbose=0, checkpoint_dir=ckpt)
    assert resumed.history.epoch == [1, 2]  # restarted at the last saved epoch
    for optimizer in resumed.model.scheme_optimizers.values():
        assert int(optimizer.iterations.numpy()) == 12
    straight = tfhash.fit("hashgan", x, bits=8, epochs=3, batch_size=16, seed=1, verbose=0)
    # Same seed: resuming gives the weights of an uninterrupted run (same batches, noise, optimizer state).
    np.testing.assert_allclose(resumed.predict_probabilities(x), straight.predict_probabilities(x), atol=1e-5)
    loaded = tfhash.Hasher.load(ckpt)
    np.testing.assert_array_equal(loaded.encode(x), resumed.encode(x))
    assert loaded.epoch == 3
    again = tfhash.fit("hashgan", x, bits=8, epochs=3, batch_size=16, seed=1, verbose=0, checkpoint_dir=ckpt)
    assert again.history is None  # a finished run is not trained again
    with pytest.raises(ValueError, match="holds a 'hashgan' model with bits=8"):
        tfhash.fit("hashgan", x, bits=16, epochs=2, batch_size=16, checkpoint_dir=ckpt)


KILL_SCRIPT = """
import sys, numpy as np, tfhash
x = np.random.default_rng(0).random((256, 8, 8, 1)).astype(np.float32)
h = tfhash.fit("hashgan", x, bits=8, epochs=int(sys.argv[2]), batch_size=16, seed=0, verbose=2,
               checkpoint_dir=sys.argv[1])
print("FINISHED_AT_EPOCH", h.epoch, "OPTIMIZER_STEPS",
      [int(o.iterations.numpy()) for o in h.model.scheme_optimizers.values()])
"""


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_resumes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    ckpt = str(tmp_path / "run")
    script = tmp_path / "train.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, str(script), ckpt, "200"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not tf.train.latest_checkpoint(ckpt):
        time.sleep(0.2)
    time.sleep(0.5)  # now somewhere inside a later epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    saved = int(tf.train.latest_checkpoint(ckpt).rsplit("-", 1)[1])
    assert saved >= 1
    result = subprocess.run([sys.executable, str(script), ckpt, str(saved + 1)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    # Only the one remaining epoch ran, continuing the optimizers' step count.
    assert f"Epoch {saved + 1}/{saved + 1}" in result.stdout and "Epoch 1/" not in result.stdout
    assert f"FINISHED_AT_EPOCH {saved + 1} OPTIMIZER_STEPS [{16 * (saved + 1)}, {16 * (saved + 1)}]" in result.stdout


def test_hasher_evaluate_and_index():
    split = tfhash.datasets.load("digits", queries_per_class=10, seed=0)
    hasher = tfhash.fit("hashgan", split, bits=16, epochs=1, batch_size=64, verbose=0)
    rows = hasher.evaluate(split, baselines=("itq",), log=None)
    assert [r["method"] for r in rows] == ["hashgan", "itq"]
    assert all(0.0 <= r["mAP"] <= 1.0 for r in rows)
    distances, ids = hasher.index(split.database_x).search(hasher.encode(split.query_x[:3]), 5)
    assert ids.shape == (3, 5) and np.all(np.diff(distances, axis=1) >= 0)


def test_fit_accepts_a_batched_tf_data_dataset_and_keras_callbacks():
    import keras

    x = _data("hashgan")
    seen = []

    class Count(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(sorted(logs))

    dataset = tf.data.Dataset.from_tensor_slices(x).batch(16, drop_remainder=True)
    hasher = tfhash.fit("hashgan", dataset, bits=8, epochs=2, verbose=0, callbacks=[Count()])
    assert len(seen) == 2 and "d_loss" in seen[0] and "g_loss" in seen[0]
    assert hasher.encode(x).shape == (64, 1)
    with pytest.raises(ValueError, match="must yield batches"):
        tfhash.fit("hashgan", tf.data.Dataset.from_tensor_slices(np.zeros((4,), np.float32)), bits=8)


def test_hashgan_presets_name_real_hyperparameters():
    from tfhash.schemes import hashgan

    known = set(hashgan.HashGAN.hyperparameter_names())
    assert "paper" in hashgan.PRESETS and hashgan.PRESETS["paper"] == {}
    for name, values in hashgan.PRESETS.items():
        assert set(values) <= known, name
        hashgan.HashGAN(bits=8, input_shape=(8, 8, 1), **values)  # accepted by the constructor


def test_hashgan_conv_pair_on_real_cifar10_images():
    from tests.conftest import SHARED_DATA

    path = os.path.join(SHARED_DATA, "cifar10-200", "cifar10_train_first200.npz")
    if not os.path.isfile(path):
        pytest.skip("../shared/data/cifar10-200 not present")
    with np.load(path, allow_pickle=False) as data:
        x = data["images"][:32].astype(np.float32) / 255.0
    hasher = tfhash.fit("hashgan", x, bits=12, epochs=1, batch_size=16, verbose=0)
    assert hasher.model.network_kind == "conv" and hasher.model.transform_kind == "translate_flip"
    assert np.all(np.isfinite(hasher.history.history["d_loss"]))
    assert hasher.encode(x).shape == (32, 2)
    # Each translate-flip copy keeps the image shape and the [0, 1] range.
    moved = hasher.model._transform(tf.constant(x[:4]), tf.constant([1, 2], tf.int64)).numpy()
    assert moved.shape == x[:4].shape and moved.min() >= 0.0 and moved.max() <= 1.0


def test_affine_transform_shifts_images():
    model = schemes.get("hashgan")(bits=8, input_shape=(8, 8, 1), consistency_transform="affine",
                                   max_shift=2, max_rotation=0.0)
    x = np.zeros((3, 8, 8, 1), np.float32)
    x[:, 3:5, 3:5] = 1.0
    moved = model._transform(tf.constant(x), tf.constant([3, 4], tf.int64)).numpy()
    assert moved.shape == x.shape
    assert not np.allclose(moved, x)  # shifted by a random sub-pixel amount up to 2 px
    np.testing.assert_allclose(moved.sum(axis=(1, 2, 3)), 4.0, atol=1e-4)  # the blob stays inside: mass kept
