"""The shared check suite every registered scheme passes; it reads everything it needs from the scheme's class.

Scheme-specific tests live in ``test_<scheme>.py``."""

import random

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfhash
from tests import scheme_inputs as inputs
from tests.helpers import assert_xla_trains_like_plain, scheme_labels
from tests.minimal_scheme import MinimalHash
from tfhash import schemes
from tfhash.schemes import registry
from tfhash.schemes.base import HashingScheme

# Every registered scheme, and the minimal one of docs/adding_a_scheme.md (registered for these tests only).
SCHEMES = schemes.names() + [MinimalHash.key]


@pytest.fixture(autouse=True)
def _minimal_scheme_registered(monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, MinimalHash.key, MinimalHash)


def _shape(name):
    return inputs.input_shape(name)


def _data(name, n=64, seed=0):
    return np.random.default_rng(seed).random((n,) + tuple(_shape(name))).astype(np.float32)


def _fit(name, x, **kwargs):
    """``tfhash.fit`` with the labels and test settings the scheme needs."""
    scheme_cls = schemes.get(name)
    return tfhash.fit(name, x, scheme_labels(scheme_cls, len(x)), **{**inputs.hyperparameters(scheme_cls), **kwargs})


def _build(name, **kwargs):
    scheme_cls = schemes.get(name)
    return scheme_cls(input_shape=_shape(name), **{**inputs.hyperparameters(scheme_cls), **kwargs})


@pytest.mark.parametrize("name", SCHEMES)
def test_config_round_trip(name):
    model = _build(name, bits=12, seed=3)
    config = model.get_config()
    rebuilt = schemes.get(name).from_config(config)
    assert rebuilt.get_config() == config
    assert [v.shape for v in rebuilt.weights] == [v.shape for v in model.weights]


@pytest.mark.parametrize("name", SCHEMES)
def test_compile_with_defaults_builds_one_optimizer_per_player(name):
    model = _build(name, bits=8)
    model.compile()
    assert set(model.scheme_optimizers) == set(model.players())
    for player, optimizer in model.scheme_optimizers.items():
        assert optimizer.built and len(optimizer.variables) > 1, player


@pytest.mark.parametrize("name", SCHEMES)
def test_short_fit_has_finite_losses_and_packed_codes(name):
    x = _data(name)
    hasher = _fit(name, x, bits=12, epochs=2, batch_size=16, verbose=0)
    logs = hasher.history.history
    assert logs and all(np.all(np.isfinite(v)) for v in logs.values())
    encoded = hasher.encode(x)
    assert encoded.dtype == np.uint8 and encoded.shape == (64, 2)
    assert np.all(encoded[:, 1] < 16)  # padding bits are zero


@pytest.mark.parametrize("name", SCHEMES)
def test_fixed_seed_is_deterministic(name):
    x = _data(name)
    first = _fit(name, x, bits=8, epochs=1, batch_size=16, seed=5, verbose=0)
    second = _fit(name, x, bits=8, epochs=1, batch_size=16, seed=5, verbose=0)
    np.testing.assert_allclose(first.predict_probabilities(x), second.predict_probabilities(x), atol=1e-6)
    # Another seed starts from other weights (training from them is the same code path as above).
    other, same = _build(name, bits=8, seed=6), _build(name, bits=8, seed=5)
    assert not np.allclose(other.predict_probabilities(x), same.predict_probabilities(x), atol=1e-6)


@pytest.mark.parametrize("name", SCHEMES)
def test_encoder_model_is_plain_and_matches_encode(name):
    model = _build(name, bits=8)
    encoder = model.encoder_model()
    x = _data(name, n=5)
    np.testing.assert_allclose(np.asarray(encoder(x)), model.predict_probabilities(x), atol=1e-6)
    players = model.players()
    assert model.spec.encoder_players and set(model.spec.encoder_players) <= set(players)
    encoder_side = {id(v) for p in model.spec.encoder_players for v in players[p]}
    adversarial_side = {id(v) for p in players if p not in model.spec.encoder_players for v in players[p]}
    encoder_trainable = {id(v) for v in encoder.trainable_weights}
    assert encoder_trainable and encoder_trainable <= encoder_side  # only the encoder's players are exported
    assert not adversarial_side & {id(v) for v in encoder.weights}


@pytest.mark.e2e  # SavedModel and TFLite conversions of every scheme: the end-to-end tier
@pytest.mark.parametrize("name", SCHEMES)
def test_checkpoint_round_trip_and_exports_give_the_same_codes(name, tmp_path):
    x = _data(name)
    hasher = _fit(name, x, bits=12, epochs=1, batch_size=16, seed=2, verbose=0,
                        checkpoint_dir=str(tmp_path / "ckpt"))
    expected = hasher.encode(x)
    np.testing.assert_array_equal(tfhash.Hasher.load(str(tmp_path / "ckpt")).encode(x), expected)
    exported = tfhash.load(hasher.export(str(tmp_path / "saved")))
    np.testing.assert_array_equal(exported.encode(x), expected)
    scheme_cls = schemes.get(name)
    assert sorted(exported._loaded.signatures) == sorted(tfhash.encoding.serving_signatures(scheme_cls.input_kind))
    assert exported.metadata["input_kind"] == scheme_cls.input_kind
    assert exported.metadata["preset"] == scheme_cls.default_preset
    on_device = tfhash.load(tfhash.export.export_tflite(hasher, str(tmp_path / "encoder.tflite")))
    differing = tfhash.codes.unpack(on_device.encode(x), 12) != tfhash.codes.unpack(expected, 12)
    assert differing.mean() <= 0.01




@pytest.mark.parametrize("name", SCHEMES)
def test_scheme_facts_are_consistent(name):
    scheme_cls = schemes.get(name)
    known = set(scheme_cls.default_hyperparameters())
    assert scheme_cls.input_kind in tfhash.encoding.INPUT_KINDS
    assert scheme_cls.spec.retrieval_protocol in ("labels", "euclidean")
    assert set(scheme_cls.spec.paper_baselines) <= set(tfhash.baselines.BASELINES)
    for label, values in scheme_cls.spec.ablations.items():
        assert values and set(values) <= known, label
        _build(name, bits=8, **values)
    assert set(scheme_cls.spec.replica_local_terms) <= known
    # Adversarial schemes log their discriminator's loss; the deep baselines have none and log their total.
    assert ("loss" if scheme_cls.spec.deep_baseline else "d_loss") in scheme_cls.loss_names


@pytest.mark.parametrize("name", SCHEMES)
def test_input_values_follow_the_input_kind(name):
    scheme_cls = schemes.get(name)
    x = _data(name)
    if scheme_cls.input_kind == "images":
        with pytest.raises(ValueError, match="values in \\[0, 1\\].*divide by 255"):
            _fit(name, x * 255.0, bits=8, epochs=1, batch_size=16)
        pixels = (x * 255).round().astype(np.uint8)
        hasher = _fit(name, pixels, bits=8, epochs=1, batch_size=16, verbose=0)
        np.testing.assert_array_equal(hasher.encode(pixels), hasher.encode(pixels.astype(np.float32) / 255.0))
        with pytest.raises(ValueError, match="values in \\[0, 1\\]"):
            hasher.encode(x * 255.0)
    else:  # raw feature values of any scale are features, not pixels
        hasher = _fit(name, x * 255.0, bits=8, epochs=1, batch_size=16, verbose=0)
        assert hasher.encode(x * 255.0).shape == (64, 1)


def test_constructing_a_scheme_or_loading_a_hasher_leaves_the_callers_random_state_alone(tmp_path):
    run = tmp_path / "run"
    tfhash.fit("sigah", _data("sigah", n=16), bits=4, epochs=1, batch_size=8, verbose=0, checkpoint_dir=str(run))

    def draws():
        return random.random(), float(np.random.rand()), keras.random.uniform((2,)).numpy().tolist()

    keras.utils.set_random_seed(123)
    expected = draws()
    builds = [lambda name=name: _build(name, bits=8, seed=7) for name in SCHEMES]
    for build in builds + [lambda: tfhash.Hasher.load(str(run))]:
        keras.utils.set_random_seed(123)
        build()
        assert draws() == expected
    first, second = _build(SCHEMES[0], bits=8, seed=7), _build(SCHEMES[0], bits=8, seed=7)
    for a, b in zip(first.weights, second.weights):  # still one seed, one set of initial weights
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("name", SCHEMES)
def test_every_hyperparameter_has_a_declared_rule_checked_without_building_anything(name, monkeypatch):
    scheme_cls = schemes.get(name)
    assert set(scheme_cls.hyperparameter_rules) == set(scheme_cls.default_hyperparameters())
    monkeypatch.setattr(HashingScheme, "__init__", lambda self, *a, **k: pytest.fail("check_values built a model"))
    assert scheme_cls.check_values({}, 8) == {}
    with pytest.raises(ValueError, match="origin: `bits` must be a positive integer"):
        scheme_cls.check_values({}, 0, "origin")


@pytest.mark.e2e  # XLA compiles every scheme's step (the slowest part of this suite): the end-to-end tier
@pytest.mark.parametrize("name", SCHEMES)
def test_xla_step_equals_the_plain_step(name):
    # What Keras does on one GPU by default: the training step compiled by XLA, forced here on the CPU.
    x = _data(name)
    plain = _fit(name, x, bits=8, epochs=1, batch_size=64, seed=3, verbose=0, jit_compile=False)  # one step
    if plain.model.supports_jit:
        xla = _fit(name, x, bits=8, epochs=1, batch_size=64, seed=3, verbose=0, jit_compile=True)
        assert xla.model.jit_compile is True
    else:  # a scheme that declares it cannot compile trains plainly, with Keras's own warning
        with pytest.warns(UserWarning, match="doesn't support `jit_compile=True`"):
            xla = _fit(name, x, bits=8, epochs=1, batch_size=64, seed=3, verbose=0, jit_compile=True)
        assert xla.model.jit_compile is False
    assert_xla_trains_like_plain(plain, xla, x, 8)


@pytest.mark.e2e  # the GPU path forced on the CPU, as the XLA test: the end-to-end tier
@pytest.mark.parametrize("name", SCHEMES)
def test_mixed_precision_trains_with_loss_scaling_and_serves_float32_and_uint8(name, mixed_precision, tmp_path):
    x = _data(name, n=32)
    hasher = _fit(name, x, bits=8, epochs=1, batch_size=16, seed=0, verbose=0)
    model = hasher.model
    assert model.dtype_policy.name == "mixed_float16"
    assert all(isinstance(o, keras.optimizers.LossScaleOptimizer) for o in model.scheme_optimizers.values())
    assert all(np.all(np.isfinite(v)) for v in hasher.history.history.values())
    codes, probabilities = hasher.encode(x), hasher.predict_probabilities(x)
    assert codes.dtype == np.uint8 and codes.shape == (32, 1)
    assert probabilities.dtype == np.float32 and probabilities.shape == (32, 8)
    served = tf.saved_model.load(hasher.export(str(tmp_path / "export"))).signatures["serving_default"]
    assert {k: v.dtype for k, v in served.structured_outputs.items()} == {"codes": tf.uint8,
                                                                          "probabilities": tf.float32}
    np.testing.assert_array_equal(served(inputs=tf.constant(x))["codes"].numpy(), codes)
