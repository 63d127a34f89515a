"""DSH-GANs: label checks, the two stages in one fit (and resuming in either, compiled by XLA, in mixed
precision), real and synthetic triplets."""

import keras
import numpy as np
import pytest

import tfhash
from tests import scheme_inputs as inputs
from tests.helpers import assert_xla_trains_like_plain
from tfhash.schemes.base import HashingScheme
from tfhash.schemes.dshgan import DSHGAN

SHAPE = inputs.input_shape(DSHGAN)


def _data(n=48, seed=0):
    return np.random.default_rng(seed).random((n,) + SHAPE).astype(np.float32)


def _labels(n=48):
    index = np.arange(n)
    return np.where(index % 3 == 2, -1, index % 4)


class _Interrupt(keras.callbacks.Callback):
    """Stops a run after the checkpoint of epoch ``after`` is written, as a killed process would."""

    def __init__(self, after):
        super().__init__()
        self.after = after
        self.seen = []  # (epoch, stage) of every epoch begun

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append((epoch, self.model._stage))

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.after:
            raise KeyboardInterrupt


def test_labels_are_checked_before_anything_is_built(monkeypatch):
    x = _data()

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(HashingScheme, "__init__", no_model)
    with pytest.raises(ValueError, match="`y` is required"):
        tfhash.fit("dshgan", x, bits=8)
    few = _labels()
    few[few == 3] = -1
    few[0] = 3  # one labelled item of class 3
    with pytest.raises(ValueError, match=r"at least 2 items of every class; .*\{3: 1\}"):
        tfhash.fit("dshgan", x, few, bits=8)
    with pytest.raises(ValueError, match=r"class ids in \[0, 2\] \(num_classes=3\), got class ids up to 3"):
        tfhash.fit("dshgan", x, _labels(), bits=8, num_classes=3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        tfhash.fit("dshgan", x, np.where(_labels() >= 0, 0, -1), bits=8)
    with pytest.raises(ValueError, match="labels none of the 48 items"):
        tfhash.fit("dshgan", x, np.full(48, -1), bits=8)
    with pytest.raises(ValueError, match="`multi_label`=True does not match `y` \\(class ids\\)"):
        tfhash.fit("dshgan", x, _labels(), bits=8, multi_label=True)
    with pytest.raises(ValueError, match="`shared_init`='discriminator' needs the default backbone"):
        tfhash.fit("dshgan", x, _labels(), bits=8, shared_init="discriminator", use_generator=False)


@pytest.mark.e2e
def test_one_fit_trains_both_stages_and_resumes_in_the_stage_it_stopped_in(tmp_path):
    x, y = _data(), _labels()
    settings = dict(bits=8, preset="semi", epochs=4, batch_size=16, seed=3, generator_epochs=2, verbose=0)
    whole = tfhash.fit("dshgan", x, y, **settings)
    assert whole.history.history["stage"] == [1.0, 1.0, 2.0, 2.0]
    assert whole.history.history["triplet"][:2] == [0.0, 0.0] and whole.history.history["d_loss"][2:] == [0.0, 0.0]
    expected = whole.predict_probabilities(x)
    run = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):  # stopped in stage 1
        tfhash.fit("dshgan", x, y, checkpoint_dir=run, callbacks=[_Interrupt(1)], **settings)
    second = _Interrupt(3)
    with pytest.raises(KeyboardInterrupt):  # resumed in stage 1, stopped again in stage 2
        tfhash.fit("dshgan", x, y, checkpoint_dir=run, callbacks=[second], **settings)
    assert second.seen == [(1, 1), (2, 2)]
    resumed = tfhash.fit("dshgan", x, y, checkpoint_dir=run, **settings)
    assert resumed.history.epoch == [3] and resumed.history.history["stage"] == [2.0]
    np.testing.assert_allclose(resumed.predict_probabilities(x), expected, atol=1e-5)


@pytest.mark.e2e  # several fits or an export: the end-to-end tier
def test_without_the_generator_the_same_network_trains_on_real_triplets():
    x, y = _data(), _labels()
    hasher = tfhash.fit("dshgan", x, y, bits=8, epochs=2, batch_size=16, verbose=0)  # the default: no GAN
    model = hasher.model
    assert set(model.players()) == {"shared"} and not hasattr(model, "generator")
    assert hasher.history.history["stage"] == [2.0, 2.0] and hasher.history.history["g_loss"] == [0.0, 0.0]
    assert model.sample_images(8) is None
    with pytest.warns(UserWarning, match=r"`epochs` \(2\) ends within stage 1 \(generator_epochs=3\)"):
        tfhash.fit("dshgan", x, y, bits=8, preset="semi", epochs=2, batch_size=16, generator_epochs=3, verbose=0)
    with_gan = tfhash.fit("dshgan", x, y, bits=8, preset="semi", epochs=1, batch_size=16, generator_epochs=0,
                          verbose=0).model
    shared = [v.shape for v in with_gan.encoder_model().weights]
    assert [v.shape for v in model.encoder_model().weights] == shared  # the exported network is the same


# The shared suite's one-epoch fits of DSH-GANs stop in stage 1; here stage 2, which trains the codes, runs too.
HASHING_STAGE = pytest.mark.parametrize("settings", [dict(preset="semi", generator_epochs=1, epochs=2), dict(epochs=1)],
                                        ids=["gan-then-hashing", "no-gan"])


@pytest.mark.e2e  # two fits per setting
@HASHING_STAGE
def test_the_hashing_stage_compiles_under_xla(settings):
    x, y = _data(), _labels()
    settings = dict(bits=8, batch_size=16, seed=3, verbose=0, **settings)
    plain = tfhash.fit("dshgan", x, y, jit_compile=False, **settings)
    xla = tfhash.fit("dshgan", x, y, jit_compile=True, **settings)
    assert xla.model.jit_compile is True and plain.history.history["stage"][-1] == 2.0
    assert_xla_trains_like_plain(plain, xla, x, 8)


@pytest.mark.e2e
@HASHING_STAGE
def test_the_hashing_stage_trains_in_mixed_precision(settings, mixed_precision):
    x, y = _data(), _labels()
    mixed = tfhash.fit("dshgan", x, y, bits=8, batch_size=16, seed=3, verbose=0, **settings)
    assert mixed.model.dtype_policy.name == "mixed_float16" and mixed.history.history["stage"][-1] == 2.0
    assert mixed.history.history["triplet"][-1] > 0
    assert all(np.isfinite(v).all() for v in mixed.history.history.values())
    assert mixed.encode(x).dtype == np.uint8 and mixed.predict_probabilities(x).dtype == np.float32


def test_triplets_pair_each_query_with_its_labels_and_labels_it_shares_none_of():
    rows = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [1, 0, 1]], np.float32)
    model = DSHGAN(bits=8, input_shape=(2,), num_classes=3, multi_label=True, use_generator=False)
    x = np.arange(12, dtype=np.float32).reshape(6, 2) / 12.0
    model.adapt(np.concatenate([x, np.zeros((2, 2), np.float32)]), np.concatenate([rows, np.zeros((2, 3))]))
    assert model._pool["x"].shape == (6, 2)  # unlabelled items are not in the pool
    queries = np.repeat(rows, 20, axis=0)
    seed = model._stateless_seed(0, 1)
    negatives, found = model._negative(queries, seed)
    overlap = (queries * rows[np.asarray(negatives)]).sum(axis=1)
    assert np.all(overlap[np.asarray(found) > 0] == 0) and np.asarray(found).mean() > 0.9
    positives = np.asarray(model._real_positive(queries, seed))
    positive_rows = rows[[int(np.flatnonzero(np.all(x == p, axis=1))[0]) for p in positives]]
    assert np.all((queries * positive_rows).sum(axis=1) > 0)


def test_multi_label_rows_train_and_generated_samples_come_one_row_per_class():
    x = _data()
    y = np.zeros((48, 3), np.float32)
    y[np.arange(0, 48, 2), np.arange(0, 48, 2) % 3] = 1
    y[np.arange(0, 48, 4), (np.arange(0, 48, 4) + 1) % 3] = 1
    hasher = tfhash.fit("dshgan", x, y, bits=8, preset="semi", epochs=2, batch_size=16, generator_epochs=1, verbose=0)
    assert hasher.model.multi_label and hasher.model.num_classes == 3
    assert all(np.isfinite(v).all() for v in hasher.history.history.values())
    images = hasher.model.sample_images(12)
    assert images.shape == (12,) + SHAPE and hasher.model.sample_columns == 21
    assert 0.0 <= images.min() and images.max() <= 1.0


def test_a_user_backbone_is_trained_and_exported_in_place_of_the_default(tmp_path):
    x, y = _data(), _labels()
    backbone = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(16, "relu")],
                                name="my_backbone")
    hasher = tfhash.fit("dshgan", x, y, bits=8, epochs=1, batch_size=16, generator_epochs=0, backbone=backbone,
                        verbose=0, checkpoint_dir=str(tmp_path / "run"))
    assert hasher.model.shared_backbone is backbone and hasher.model.get_config()["backbone"] == "model my_backbone"
    exported = tfhash.load(hasher.export(str(tmp_path / "saved")))
    np.testing.assert_array_equal(exported.encode(x), hasher.encode(x))
    with pytest.raises(ValueError, match="was a keras.Model at training: pass the same model"):
        tfhash.Hasher.load(str(tmp_path / "run"))
    loaded = tfhash.Hasher.load(str(tmp_path / "run"), hyperparameters={"backbone": backbone})
    np.testing.assert_array_equal(loaded.encode(x), hasher.encode(x))
    flat = keras.Sequential([keras.Input(SHAPE), keras.layers.Dense(4)], name="not_flat")
    with pytest.raises(ValueError, match=r"`backbone` must map items \(8, 8, 1\) to \[n, d\] features"):
        tfhash.fit("dshgan", x, y, bits=8, epochs=1, batch_size=16, backbone=flat, verbose=0)
