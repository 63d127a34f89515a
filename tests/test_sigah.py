"""SiGAH specifics: feature pipeline, standardisation inside the model, the fixed Psi, bad input."""

import keras
import numpy as np
import pytest

import tfhash
from tfhash import datasets
from tfhash.schemes import sigah


def _write_vecs(path, rows, dtype, dims=None):
    with open(path, "wb") as f:
        for i, row in enumerate(rows):
            np.array([len(row) if dims is None else dims[i]], "<i4").tofile(f)
            np.asarray(row, dtype=dtype).tofile(f)


def test_vecs_files_are_memory_mapped_views(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 12)).astype(np.float32)
    _write_vecs(tmp_path / "a.fvecs", x, "<f4")
    _write_vecs(tmp_path / "a.bvecs", (x * 10).astype(np.uint8), "u1")
    features = datasets.read_features(tmp_path / "a.fvecs")
    np.testing.assert_array_equal(features, x)
    assert not features.flags.owndata and isinstance(features.base, np.memmap)  # a view into the file
    np.testing.assert_array_equal(datasets.read_features(tmp_path / "a.bvecs", max_items=7),
                                  (x * 10).astype(np.uint8)[:7])


def test_inconsistent_record_headers_and_dimensions_are_refused(tmp_path):
    x = np.ones((6, 4), np.float32)
    _write_vecs(tmp_path / "bad.fvecs", x, "<f4", dims=[4, 4, 4, 5, 4, 4][:6])
    # Record 3's header says 5 while its payload has 4 values: sizes still divide, headers disagree.
    with pytest.raises(ValueError, match="inconsistent record headers: record 3 says dimension 5"):
        datasets.read_features(tmp_path / "bad.fvecs")
    _write_vecs(tmp_path / "train.fvecs", np.ones((10, 8)), "<f4")
    _write_vecs(tmp_path / "query.fvecs", np.ones((3, 6)), "<f4")
    with pytest.raises(ValueError, match=r"same dimension, got \{'train': 8, 'query': 6, 'database': 8\}"):
        datasets.load_feature_files(tmp_path / "train.fvecs", tmp_path / "query.fvecs")


def test_integer_and_all_constant_features_are_refused_before_training():
    with pytest.raises(ValueError, match="floating-point features .* got int32.*neighbour ids"):
        tfhash.fit("sigah", np.ones((64, 8), np.int32), bits=8, batch_size=16)
    with pytest.raises(ValueError, match="all-constant features"):
        tfhash.fit("sigah", np.full((64, 8), 3.0, np.float32), bits=8, batch_size=16)
    hasher = tfhash.fit("sigah", (np.random.default_rng(0).random((64, 8)) * 255).astype(np.uint8), bits=8,
                        batch_size=16, epochs=1, verbose=0)  # uint8 features (.bvecs) are accepted
    assert hasher.encode(np.zeros((2, 8), np.float32)).shape == (2, 1)


def test_feature_statistics_stream_in_chunks():
    x = np.random.default_rng(1).normal(3.0, 2.0, size=(1000, 5)).astype(np.float32)
    x[:, 2] = 7.0  # one constant feature keeps scale 1
    mean, scale = sigah.feature_statistics(x, "per_feature", chunk_size=64)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(scale[[0, 1, 3, 4]], x.std(axis=0)[[0, 1, 3, 4]], rtol=1e-4)
    assert scale[2] == 1.0
    _, global_scale = sigah.feature_statistics(x, "global", chunk_size=64)
    np.testing.assert_allclose(global_scale, np.sqrt(x.var(axis=0).mean()), rtol=1e-4)


def test_standardisation_is_fitted_on_training_data_and_travels_with_the_export(tmp_path):
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(256, 16)) * 50.0 + 1000.0).astype(np.float32)
    hasher = tfhash.fit("sigah", x, bits=16, epochs=2, batch_size=64, seed=0, verbose=0)
    standardizer = hasher.model.standardizer
    np.testing.assert_allclose(standardizer.mean.numpy(), x.mean(axis=0), rtol=1e-4)
    codes = hasher.encode(x)
    bits = tfhash.codes.unpack(codes, 16)
    assert 0.1 < bits.mean() < 0.9  # raw features at ~1000 would give all-ones codes without centring
    exported = tfhash.load(hasher.export(str(tmp_path / "export")))
    np.testing.assert_array_equal(exported.encode(x), codes)


def test_psi_is_fixed_seeded_and_saved(tmp_path):
    x = np.random.default_rng(3).normal(size=(128, 10)).astype(np.float32)
    model = sigah.SiGAH(bits=8, input_shape=(10,), seed=4)
    before = model.psi.numpy().copy()
    assert before.shape == (20, 10) and not model.psi.trainable  # m = 2d sparse units
    np.testing.assert_allclose(before.std(), 1.0 / np.sqrt(10), rtol=0.25)  # N(0, 1/d)
    hasher = tfhash.fit("sigah", x, bits=8, epochs=2, batch_size=32, seed=4, verbose=0,
                        checkpoint_dir=str(tmp_path / "run"))
    np.testing.assert_array_equal(hasher.model.psi.numpy(), before)  # untouched by training
    np.testing.assert_array_equal(tfhash.Hasher.load(str(tmp_path / "run")).model.psi.numpy(), before)
    assert not np.allclose(sigah.SiGAH(bits=8, input_shape=(10,), seed=5).psi.numpy(), before)


def test_quantisation_sign_bound_pushes_codes_to_the_corners_and_printed_pulls_them_in():
    x = np.random.default_rng(5).normal(size=(512, 16)).astype(np.float32)
    settings = dict(bits=8, epochs=5, batch_size=64, seed=0, verbose=0, weight_quantization=5.0, preset="paper")
    bound = tfhash.fit("sigah", x, quantization_sign="bound", **settings).predict_probabilities(x)
    printed = tfhash.fit("sigah", x, quantization_sign="printed", **settings).predict_probabilities(x)
    assert np.abs(bound).mean() > 2 * np.abs(printed).mean()


def test_no_discriminator_ablation_leaves_the_discriminator_untrained():
    x = np.random.default_rng(6).normal(size=(128, 12)).astype(np.float32)
    model = sigah.SiGAH(bits=8, input_shape=(12,), seed=0)
    initial = [w.numpy().copy() for w in model.discriminator.weights]
    hasher = tfhash.fit("sigah", x, bits=8, epochs=1, batch_size=32, seed=0, verbose=0, weight_adversarial=0.0)
    for before, after in zip(initial, hasher.model.discriminator.weights):
        np.testing.assert_array_equal(before, after.numpy())
    assert int(hasher.model.scheme_optimizers["discriminator"].iterations.numpy()) == 0


def test_sigah_codes_preserve_euclidean_neighbours_better_than_random_projections():
    from tfhash import baselines, metrics

    x, _ = datasets.make_gaussian_mixture(4000, 64, components=20, seed=0)
    database, queries = x[:3800], x[3800:]
    truth = metrics.euclidean_ground_truth(queries, database, n=100)
    hasher = tfhash.fit("sigah", database, bits=32, epochs=5, batch_size=500, seed=0, verbose=0)
    ours = metrics.ann_mean_average_precision(hasher.encode(queries), hasher.encode(database), truth)
    lsh = baselines.LSH(bits=32, seed=0).fit(database)
    random = metrics.ann_mean_average_precision(lsh.encode(queries), lsh.encode(database), truth)
    assert ours > random + 0.05, (ours, random)


def test_itq_and_pca_initialisation_start_from_those_codes_and_warmup_holds_them():
    from tfhash import baselines

    x = np.random.default_rng(7).normal(size=(400, 16)).astype(np.float32) * 3.0 + 1.0
    for kind, baseline in (("itq", "itq"), ("pca", "pcah")):
        model = sigah.SiGAH(bits=8, input_shape=(16,), seed=0, hash_init=kind)
        model.adapt(x)
        ours = (model.encode_graph(x).numpy() >= 0).astype(np.uint8)
        standardized = model.standardizer(x).numpy()
        linear = baselines.get(baseline)(bits=8, seed=0).fit(standardized)
        theirs = tfhash.codes.unpack(linear.encode(standardized), 8)
        assert np.mean(ours == theirs) > 0.999, kind
        spread = model.encode_graph(x).numpy()
        assert np.all(np.abs(spread).max(axis=0) < 1.0)  # tanh of unit-spread projections: not saturated
    kernels = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            kernels.append(self.model.hash_layer.kernel.numpy().copy())

    tfhash.fit("sigah", x, bits=8, epochs=2, batch_size=100, seed=0, verbose=0, preset="paper", hash_init="itq",
               hash_warmup_fraction=0.5, callbacks=[Record()])  # 8 steps: W held for the first 4
    start = sigah.SiGAH(bits=8, input_shape=(16,), seed=0, hash_init="itq")
    start.adapt(x)
    np.testing.assert_allclose(kernels[0], start.hash_layer.kernel.numpy(), rtol=1e-4)  # weight decay only
    assert np.abs(kernels[1] - kernels[0]).max() > 1e-3
    with pytest.raises(ValueError, match=r"hash_init='itq'.* needs `bits` at most the feature dimension \(16\)"):
        tfhash.fit("sigah", x, bits=24, epochs=1, batch_size=100, hash_init="itq")
    with pytest.raises(ValueError, match="`hash_init` must be one of"):
        tfhash.fit("sigah", x, bits=8, hash_init="random")
    with pytest.raises(ValueError, match=r"`hash_warmup_fraction` must be in \[0, 1\), got 1"):
        tfhash.fit("sigah", x, bits=8, hash_warmup_fraction=1)
