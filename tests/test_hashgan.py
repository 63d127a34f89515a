"""HashGAN specifics: bad input, non-finite losses, resuming, datasets, the conv pair, transforms, presets."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

import tfhash
from tfhash import schemes


def _data(n=64, seed=0):
    return np.random.default_rng(seed).random((n, 8, 8, 1)).astype(np.float32)


def test_bad_input_is_refused_before_training(tmp_path):
    x = _data()
    with pytest.raises(ValueError, match=re.escape(f"registered schemes {tfhash.schemes.names()}")):
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
        tfhash.fit("hashgan", np.zeros((40, 16, 16, 2), np.float32), batch_size=16)
    with pytest.raises(ValueError, match="`weight_entropy` must be a non-negative number"):
        tfhash.fit("hashgan", x, batch_size=16, weight_entropy=-1.0)


def test_nan_loss_stops_training_naming_the_term(tmp_path):
    x = _data()
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


@pytest.mark.e2e
def test_interrupted_run_resumes_with_model_and_both_optimizers(tmp_path):
    x = _data()
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


@pytest.mark.e2e  # several fits or an export: the end-to-end tier
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

    x = _data()
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


@pytest.mark.e2e  # several fits or an export: the end-to-end tier
def test_vat_preset_sets_the_adversarial_transform():
    x = _data()
    hasher = tfhash.fit("hashgan", x, bits=8, epochs=1, batch_size=16, preset="vat", verbose=0)
    assert hasher.model.transform_kind == "adversarial" and hasher.model.weight_entropy == 0.1
    assert hasher.preset == "vat"


@pytest.mark.e2e
def test_hashgan_conv_pair_on_real_cifar10_images():
    from tests.helpers import SHARED_DATA

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


def test_neighbour_radius_is_a_multiple_of_the_distance_to_the_t_th_training_neighbour():
    x = np.random.default_rng(0).random((300, 8, 8, 1)).astype(np.float32)
    model = schemes.get("hashgan")(bits=8, input_shape=(8, 8, 1), consistency_transform="adversarial",
                                   adversarial_radius="neighbour", adversarial_epsilon=0.25, radius_neighbour=10)
    model.adapt(x)
    flat = x.reshape(300, -1)
    distances = np.sort(np.sqrt(((flat[:5, None] - flat[None]) ** 2).sum(-1)), axis=1)
    np.testing.assert_allclose(model._neighbour_radius(tf.constant(x[:5])).numpy(), 0.25 * distances[:, 10], rtol=1e-4)
    # Far from the origin, float32 rounding of the distance expansion leaves an item's distance to itself well
    # above 0 (about 1e-2 here) on any processor: the item must still be skipped, not counted as a neighbour.
    model.adapt(x + 50.0)
    np.testing.assert_allclose(model._neighbour_radius(tf.constant(x[:5] + 50.0)).numpy(), 0.25 * distances[:, 10],
                               rtol=1e-4)
    model.adapt(x)
    moved = model._transform(tf.constant(x[:5]), tf.constant([1, 2], tf.int64)).numpy()
    np.testing.assert_allclose(np.sqrt(((moved - x[:5]) ** 2).sum(axis=(1, 2, 3))), 0.25 * distances[:, 10], rtol=1e-3)
    with pytest.raises(ValueError,
                       match=r"`radius_neighbour` must be smaller than the number of training items \(300\)"):
        schemes.get("hashgan")(bits=8, input_shape=(8, 8, 1), consistency_transform="adversarial",
                               adversarial_radius="neighbour", radius_neighbour=300).adapt(x)
    with pytest.raises(ValueError, match="`adversarial_radius` must be one of"):
        tfhash.fit("hashgan", x, bits=8, adversarial_radius="global")
