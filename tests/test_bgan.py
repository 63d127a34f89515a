"""BGAN specifics: the neighbourhood graph behind S, the beta continuation, graph features, resume, bad input."""

import numpy as np
import pytest
import tensorflow as tf

import tfhash
from tfhash import neighbours


def _images(n=96, seed=0):
    """Two kinds of 8x8 images (bright top half / bright bottom half) with noise: labels 0 / 1."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.random((n, 8, 8, 1)).astype(np.float32) * 0.3
    x[y == 0, :4] += 0.6
    x[y == 1, 4:] += 0.6
    return np.clip(x, 0, 1), y


def test_similarity_of_a_batch_is_read_from_the_neighbour_lists():
    x, _ = _images()
    model = tfhash.schemes.get("bgan")(bits=8, input_shape=(8, 8, 1), k1=5, k2=4)
    model.adapt(x)
    graph = model.graph
    rows, columns = np.array([0, 5, 17]), np.arange(96)
    s = model._similarity(tf.constant(rows, tf.int64), tf.constant(columns, tf.int64)).numpy()
    for r, i in enumerate(rows):
        expected = np.where(np.isin(columns, graph.neighbours(i)), 1.0, -1.0)
        np.testing.assert_array_equal(s[r], expected)
    assert graph.same_label_fraction(_images()[1]) > 0.9  # the two kinds are told apart by pixel cosine


def test_beta_rises_in_stages_and_codes_follow_the_sign_of_the_hash_layer():
    x, _ = _images()
    hasher = tfhash.fit("bgan", x, bits=8, epochs=4, batch_size=32, seed=0, verbose=0, k1=5, k2=4,
                        beta_stages=[1.0, 2.0, 5.0, 10.0], weight_content=0.0, weight_adversarial=0.0)
    assert hasher.history.history["beta"] == [1.0, 2.0, 5.0, 10.0]
    model = hasher.model
    z = model.hash_layer(model.encoder(x)).numpy()
    bits = tfhash.codes.unpack(hasher.encode(x), 8)
    np.testing.assert_array_equal(bits, (z >= 0).astype(np.uint8))
    probabilities = hasher.predict_probabilities(x)
    np.testing.assert_allclose(probabilities, np.clip(10.0 * z, -1, 1), atol=1e-5)  # app(beta_last z)


@pytest.mark.e2e  # several fits or an export: the end-to-end tier
def test_graph_features_from_an_array_or_a_model_and_their_checks():
    x, y = _images()
    perfect = np.eye(2, dtype=np.float32)[y] + 0.01 * np.arange(96, dtype=np.float32)[:, None] / 96
    hasher = tfhash.fit("bgan", x, bits=8, epochs=1, batch_size=32, verbose=0, k1=5, k2=4, graph_features=perfect,
                        weight_content=0.0, weight_adversarial=0.0)
    assert hasher.model.graph.same_label_fraction(y) == 1.0
    assert hasher.model.get_config()["graph_features"].startswith("array [96, 2] float32 sha1:")
    extractor = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                                     tf.keras.layers.Dense(6, kernel_initializer="ones")], name="extractor")
    hasher = tfhash.fit("bgan", x, bits=8, epochs=1, batch_size=32, verbose=0, k1=5, k2=4, graph_features=extractor,
                        weight_content=0.0, weight_adversarial=0.0)
    assert hasher.model.get_config()["graph_features"] == "model extractor"
    hasher = tfhash.fit("bgan", x, bits=8, epochs=1, batch_size=32, verbose=0, k1=5, k2=4, graph_features="pca",
                        weight_content=0.0, weight_adversarial=0.0)
    assert hasher.model.graph.num_items == 96

    refused = {
        r"`k1` must be smaller than the number of training items \(96\), got 96": {"k1": 96},
        r"`k2` must be smaller than the number of training items \(96\), got 200": {"k2": 200},
        r"one feature row per training item \(\[96, d\]\), got shape \(95, 2\)": {"graph_features": perfect[:95]},
        r"`graph_features` must be finite": {"graph_features": np.where(perfect > 0.5, np.nan, perfect)},
        r"model must map the 96 training items to features \[n, d\], got output of shape \(96, 8, 8, 1\)": {
            "graph_features": tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Identity()])},
        r"`graph_features` must be one of \['pixels', 'pca'\]": {"graph_features": "cnn"},
        r"`beta_stages` must be a non-empty list of positive numbers": {"beta_stages": []},
    }
    for message, settings in refused.items():
        with pytest.raises(ValueError, match=message):
            tfhash.fit("bgan", x, bits=8, epochs=1, batch_size=32, verbose=0, **settings)


@pytest.mark.e2e
def test_resume_rebuilds_the_graph_and_refuses_other_graph_features(tmp_path):
    x, y = _images()
    perfect = np.eye(2, dtype=np.float32)[y] + 0.01 * np.arange(96, dtype=np.float32)[:, None] / 96
    settings = dict(bits=8, batch_size=32, seed=0, verbose=0, k1=5, k2=4, graph_features=perfect,
                    weight_adversarial=0.0)
    straight = tfhash.fit("bgan", x, epochs=2, **settings)
    run = str(tmp_path / "run")

    class Interrupt(tf.keras.callbacks.Callback):  # as if the process died after the first checkpoint
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    tfhash.fit("bgan", x, epochs=2, checkpoint_dir=run, callbacks=[Interrupt()], **settings)
    assert tfhash.Hasher.load(run).epoch == 1
    resumed = tfhash.fit("bgan", x, epochs=2, checkpoint_dir=run, **settings)  # graph rebuilt from the same array
    assert resumed.model.graph.same_label_fraction(y) == 1.0
    np.testing.assert_allclose(resumed.predict_probabilities(x), straight.predict_probabilities(x), atol=1e-5)
    with pytest.raises(ValueError, match="graph_features: saved 'array \\[96, 2\\]"):
        tfhash.fit("bgan", x, epochs=3, checkpoint_dir=run, **{**settings, "graph_features": perfect[::-1].copy()})
    assert tfhash.Hasher.load(run).encode(x[:4]).shape == (4, 1)  # encoding needs no graph


def test_neighbour_graph_of_real_digits_is_mostly_same_class():
    split = tfhash.datasets.load("digits", queries_per_class=10, seed=0)
    graph = neighbours.neighbourhood_graph(split.train_x, 20, 30)
    assert graph.same_label_fraction(split.train_y) > 0.8
    assert 20 <= graph.mean_degree() <= 20 * 31


def test_pair_lookup_is_a_lower_bound_whose_memory_follows_the_queries():
    from tfhash.schemes.bgan import _lower_bound

    rng = np.random.default_rng(0)
    compiled = tf.function(_lower_bound, jit_compile=True)  # XLA: no [queries, keys] comparison
    for size in (1, 2, 7, 1000):
        keys = np.unique(rng.integers(0, 5000, size)).astype(np.int64)
        queries = np.concatenate([rng.integers(-5, 5100, 500), keys, [10**9]]).astype(np.int64)
        expected = np.minimum(np.searchsorted(keys, queries, side="left"), len(keys) - 1)
        np.testing.assert_array_equal(_lower_bound(tf.constant(keys), tf.constant(queries)).numpy(), expected)
        np.testing.assert_array_equal(compiled(tf.constant(keys), tf.constant(queries)).numpy(), expected)


def test_neighbour_pair_weight_follows_the_training_set_size_when_asked():
    x = np.random.default_rng(0).random((120, 8, 8, 1)).astype(np.float32)
    fixed = tfhash.fit("bgan", x, bits=8, epochs=1, batch_size=40, verbose=0, positive_weight=10.0, k1=3, k2=4,
                       positive_weight_items=None)
    assert fixed.model.neighbour_pair_weight == 10.0
    default = tfhash.fit("bgan", x, bits=8, epochs=1, batch_size=40, verbose=0, positive_weight=10.0, k1=3, k2=4)
    # The default preset scales the weight from 9,000 items, more steeply than the pairs' share.
    assert default.model.neighbour_pair_weight == pytest.approx(10.0 * (120 / 9000) ** 1.68)
    scaled = tfhash.fit("bgan", x, bits=8, epochs=1, batch_size=40, verbose=0, positive_weight=10.0, k1=3, k2=4,
                        positive_weight_items=40, positive_weight_exponent=1.0)
    assert scaled.model.neighbour_pair_weight == 30.0  # three times the items: neighbour pairs 3x rarer per batch
    steeper = tfhash.fit("bgan", x, bits=8, epochs=1, batch_size=40, verbose=0, positive_weight=10.0, k1=3, k2=4,
                         positive_weight_items=40, positive_weight_exponent=2.0)
    assert steeper.model.neighbour_pair_weight == pytest.approx(90.0)
    with pytest.raises(ValueError, match="`positive_weight_exponent` must be"):
        tfhash.fit("bgan", x, bits=8, positive_weight_exponent=0)
    with pytest.raises(ValueError, match="`positive_weight_items` must be a positive integer"):
        tfhash.fit("bgan", x, bits=8, positive_weight_items=0)


def test_conv_learning_rate_applies_only_to_the_convolutional_encoder():
    bgan = tfhash.schemes.get("bgan")
    settings = {"bits": 8, "optimizer_type": "adam", "learning_rate": 1e-3, "conv_learning_rate": 1e-4, "width": 0.125}
    conv = bgan(input_shape=(32, 32, 3), **settings)
    mlp = bgan(input_shape=(8, 8, 1), **settings)
    assert (conv.network_kind, mlp.network_kind) == ("conv", "mlp")
    for player in ("encoder", "generator", "discriminator"):
        assert float(conv.default_optimizer(player, 10).learning_rate) == pytest.approx(1e-4)
        assert float(mlp.default_optimizer(player, 10).learning_rate) == pytest.approx(1e-3)
    unset = bgan(input_shape=(32, 32, 3), **{**settings, "conv_learning_rate": None, "optimizer_type": "sgd"})
    assert float(unset.default_optimizer("encoder", 10).learning_rate) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="`conv_learning_rate` must be"):
        tfhash.fit("bgan", _images()[0], bits=8, conv_learning_rate=0.0)
