"""CIBHash and GreedyHash specifics: what each loss teaches, backbones, and bad input before training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfhash
from tests.helpers import counting_backbone
from tfhash import augment, datasets, schemes


@pytest.fixture(scope="module")
def digits():
    split = datasets.load("digits", queries_per_class=5, seed=0)
    return split.train_x[:640]


def _agreement(a, b):
    return float(np.mean((a >= 0.5) == (b >= 0.5)))


def test_cibhash_codes_become_invariant_to_its_views(digits):
    seed = tf.constant([5, 6], tf.int64)
    view = augment.augment(digits, seed).numpy()
    hasher = tfhash.fit("cibhash", digits, bits=16, epochs=4, batch_size=64, seed=0, verbose=0, head_batch_norm=True)
    after = _agreement(hasher.predict_probabilities(digits), hasher.predict_probabilities(view))
    shuffled = _agreement(hasher.predict_probabilities(digits), hasher.predict_probabilities(view[::-1]))
    assert after > shuffled + 0.15, (after, shuffled)  # an item's views share more bits than two items do
    frequencies = (hasher.predict_probabilities(digits) >= 0.5).mean(axis=0)
    assert 0.02 < frequencies.min() and frequencies.max() < 0.98  # no constant bits: negatives spread them


def test_cibhash_refuses_flat_items_and_bad_settings_before_training():
    with pytest.raises(ValueError, match=r"images \[h, w, c\] for cibhash .* got items of shape \(64,\)"):
        tfhash.fit("cibhash", np.random.default_rng(0).random((64, 64)).astype(np.float32), bits=8, batch_size=16)
    with pytest.raises(ValueError, match="`temperature` must be a positive number, got 0"):
        tfhash.fit("cibhash", np.zeros((64, 8, 8, 1), np.float32), bits=8, temperature=0)
    with pytest.raises(ValueError, match="`max_zoom` must be below 1"):
        tfhash.fit("cibhash", np.zeros((64, 8, 8, 1), np.float32), bits=8, max_zoom=1.5)


@pytest.mark.parametrize("name", ["cibhash", "greedyhash"])
def test_a_frozen_user_backbone_stays_as_given(name, digits):
    backbone = keras.Sequential([keras.Input(digits.shape[1:]), keras.layers.Flatten(),
                                 keras.layers.Dense(24, activation="relu")], name="pretrained")
    before = [w.numpy().copy() for w in backbone.weights]
    extra = {"target": "backbone"} if name == "greedyhash" else {}
    hasher = tfhash.fit(name, digits, bits=8, epochs=1, batch_size=64, seed=0, verbose=0, backbone=backbone,
                        train_backbone=False, **extra)
    for old, new in zip(before, backbone.weights):
        np.testing.assert_array_equal(old, new.numpy())
    assert hasher.model.get_config()["backbone"] == "model pretrained"
    with pytest.raises(ValueError, match="`backbone` must be None .* a keras.Model .* one of .*, got 'alexnet'"):
        tfhash.fit(name, digits, bits=8, backbone="alexnet")
    with pytest.raises(ValueError, match=r"`backbone`='vgg16' takes colour images \[height, width, 3\]"):
        tfhash.fit(name, digits, bits=8, backbone="vgg16")


def test_greedyhash_keeps_the_cosine_structure_of_its_targets_and_pushes_outputs_to_plus_minus_one(digits):
    hasher = tfhash.fit("greedyhash", digits, bits=32, epochs=8, batch_size=64, seed=0, verbose=0,
                        optimizer_type="adam", learning_rate=1e-3)
    np.testing.assert_allclose(hasher.model.input_mean.numpy(), digits.reshape(len(digits), -1).mean(axis=0),
                               rtol=1e-5, atol=1e-6)
    outputs = hasher.predict_probabilities(digits)
    untrained = schemes.get("greedyhash")(bits=32, input_shape=digits.shape[1:], seed=0)
    assert np.mean(np.abs(np.abs(outputs) - 1)) < np.mean(np.abs(np.abs(untrained.predict_probabilities(digits)) - 1))
    centred = digits.reshape(len(digits), -1) - digits.reshape(len(digits), -1).mean(axis=0)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    codes = np.where(outputs >= 0, 1.0, -1.0) / np.sqrt(32)
    target, ours = (centred @ centred.T).ravel(), (codes @ codes.T).ravel()
    assert np.corrcoef(target, ours)[0, 1] > 0.5  # code cosines follow the items' cosines


def test_greedyhash_refuses_targets_from_a_backbone_that_learns():
    with pytest.raises(ValueError, match="`target`='backbone' needs train_backbone=False"):
        tfhash.fit("greedyhash", np.zeros((64, 8, 8, 1), np.float32), bits=8, target="backbone")


def test_cibhash_declares_that_its_step_cannot_compile_and_keras_falls_back():
    x = np.random.default_rng(0).random((32, 8, 8, 1)).astype(np.float32)
    with pytest.warns(UserWarning, match="doesn't support `jit_compile=True`"):
        hasher = tfhash.fit("cibhash", x, bits=8, epochs=1, batch_size=32, verbose=0, jit_compile=True)
    assert hasher.model.jit_compile is False and hasher.trained


@pytest.mark.parametrize("name", ["cibhash", "greedyhash", "dshgan"])
def test_photos_get_a_default_network_whose_size_does_not_grow_with_theirs(name):
    # Above 64x64 pixels the default backbone pools its convolutions: a 224x224 photo no longer makes a model of
    # tens of millions of parameters (a flattening dense layer did). DSH-GANs without its generator, as its
    # default preset trains (its generator's size for photos is not settled here).
    scheme_cls = schemes.get(name)
    extra = {"num_classes": 4, "use_generator": False} if scheme_cls.needs_labels else {}

    def trainable_parameters(side):
        model = scheme_cls(bits=16, input_shape=(side, side, 3), **extra)
        return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)

    at_64, at_224 = trainable_parameters(64), trainable_parameters(224)
    assert at_224 <= 2 * at_64 and at_224 < 1_000_000, (at_64, at_224)
    photos = np.random.default_rng(0).integers(0, 256, (8, 224, 224, 3), dtype=np.uint8)
    hasher = tfhash.fit(name, photos, np.arange(8) % 4, bits=16, epochs=1, batch_size=8, verbose=0)
    assert hasher.encode(photos).shape == (8, 2)


def test_resnet_and_vgg_see_their_pixels_as_in_training_bgr_without_the_imagenet_means():
    from tfhash.schemes import backbones

    rgb = np.array([[[[10.0, 20.0, 30.0]]]], np.float32)
    np.testing.assert_allclose(backbones.CaffePreprocessing()(rgb).numpy()[0, 0, 0],
                               [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)


@pytest.mark.e2e  # three fits of MobileNetV3 each
@pytest.mark.parametrize("name", ["cibhash", "greedyhash", "dshgan"])
def test_a_named_backbone_is_a_keras_application_that_learns_unless_frozen(name, tmp_path):
    x = np.random.default_rng(0).random((64, 32, 32, 3)).astype(np.float32)
    y = np.arange(64) % 4 if name == "dshgan" else None
    options = {"bits": 8, "epochs": 1, "batch_size": 32, "seed": 0, "verbose": 0, "backbone": "mobilenet_v3_small"}
    if name == "dshgan":
        options["use_generator"] = False
    learning = tfhash.fit(name, x, y, **options)
    network = learning.model.shared_backbone if name == "dshgan" else learning.model.feature_network
    application = network.get_layer(index=-1)
    assert application.name.startswith("MobileNetV3Small") and network.output_shape == (None, 576)
    assert learning.model.backbone_learns and learning.model.get_config()["backbone"] == "mobilenet_v3_small"
    frozen = tfhash.fit(name, x, y, **options, train_backbone=False)
    network = frozen.model.shared_backbone if name == "dshgan" else frozen.model.feature_network
    fresh = tfhash.schemes.get(name)(bits=8, input_shape=x.shape[1:], seed=0, backbone="mobilenet_v3_small",
                                     **({"num_classes": 4, "use_generator": False} if name == "dshgan" else {}))
    fresh_network = fresh.shared_backbone if name == "dshgan" else fresh.feature_network
    for trained, initial in zip(network.weights, fresh_network.weights):  # batch statistics included
        np.testing.assert_array_equal(trained.numpy(), initial.numpy())
    # Saved and loaded: rebuilt by name, every weight from the checkpoint.
    loaded = tfhash.Hasher.load(frozen.save(str(tmp_path / "saved")))
    np.testing.assert_array_equal(loaded.encode(x), frozen.encode(x))


def test_backbone_weights_belong_to_a_named_backbone():
    x = np.zeros((8, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match="`backbone_weights`='imagenet' loads a named backbone's weights .* got "
                                         "backbone=None"):
        tfhash.fit("greedyhash", x, bits=8, backbone_weights="imagenet")
    with pytest.raises(ValueError, match="`backbone_weights` must be None .* or 'imagenet'.* got 'places365'"):
        tfhash.fit("greedyhash", x, bits=8, backbone="resnet50", backbone_weights="places365")
    with pytest.raises(ValueError, match="`train_backbone` must be True or False, got 'yes'"):
        tfhash.fit("cibhash", x, bits=8, train_backbone="yes")


@pytest.mark.parametrize("target", ["backbone", "inputs"])
def test_a_frozen_backbone_runs_once_per_item_per_fit_not_once_per_epoch(target):
    x = np.random.default_rng(0).random((256, 8, 8, 1)).astype(np.float32)
    options = {"bits": 8, "epochs": 3, "batch_size": 64, "seed": 0, "verbose": 0, "target": target}
    frozen, counter = counting_backbone((8, 8, 1))
    tfhash.fit("greedyhash", x, **options, backbone=frozen, train_backbone=False)
    # 1 item to check its output shape, every item once for training, then the 256 items fit encodes after
    # training to look for constant bits.
    assert counter.numpy() == 1 + 256 + 256
    if target == "backbone":  # the steps need only the features: a dataset is read once for them too
        read_once, counter = counting_backbone((8, 8, 1))
        tfhash.fit("greedyhash", tf.data.Dataset.from_tensor_slices(x).batch(64), **options, backbone=read_once,
                   train_backbone=False)
        assert counter.numpy() == 1 + 256 + 256
        return
    learning, counter = counting_backbone((8, 8, 1))
    tfhash.fit("greedyhash", x, **options, backbone=learning)
    assert counter.numpy() == 1 + 3 * 256 + 256


@pytest.mark.e2e
def test_a_pretrained_named_backbone_is_frozen_and_a_saved_hasher_loads_without_downloading(tmp_path, monkeypatch):
    asked = []
    real = keras.applications.MobileNetV3Small

    def offline(*args, weights=None, **kwargs):  # stands in for the download this machine cannot make
        asked.append(weights)
        return real(*args, weights=None, **kwargs)

    monkeypatch.setattr(keras.applications, "MobileNetV3Small", offline)
    x = np.random.default_rng(0).random((64, 32, 32, 3)).astype(np.float32)
    hasher = tfhash.fit("greedyhash", x, bits=8, epochs=1, batch_size=32, verbose=0, backbone="mobilenet_v3_small",
                        backbone_weights="imagenet", target="backbone")
    assert asked == ["imagenet"] and not hasher.model.backbone_learns  # pretrained: frozen by default
    loaded = tfhash.Hasher.load(hasher.save(str(tmp_path / "saved")))
    assert asked == ["imagenet", None]  # every weight comes from the checkpoint
    assert loaded.model.get_config()["backbone_weights"] == "imagenet" and not loaded.model.backbone_learns
    np.testing.assert_array_equal(loaded.encode(x), hasher.encode(x))
