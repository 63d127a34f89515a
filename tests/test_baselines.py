import numpy as np
import pytest

from tfhash import baselines, codes, datasets, metrics

ALL = sorted(baselines.BASELINES.items())


@pytest.fixture(scope="module")
def digits_split():
    return datasets.load("digits", queries_per_class=10, seed=0)


@pytest.mark.parametrize("name,cls", ALL)
def test_fit_encode_gives_packed_codes_and_is_deterministic(name, cls, digits_split):
    x = digits_split.train_x
    first = cls(bits=12, seed=3).fit(x).encode(x)
    assert first.dtype == np.uint8 and first.shape == (x.shape[0], 2)
    assert np.all(first[:, 1] < 16)  # padding bits 12..15 are zero
    np.testing.assert_array_equal(first, cls(bits=12, seed=3).fit(x).encode(x))
    method = cls(bits=12)
    assert method.fit(x) is method  # fit returns the estimator itself (scikit-learn convention)


@pytest.mark.parametrize("name,cls", ALL)
def test_every_baseline_beats_chance_on_digits(name, cls, digits_split):
    s = digits_split
    method = cls(bits=32, seed=0).fit(s.train_x)
    value = metrics.mean_average_precision(method.encode(s.query_x), method.encode(s.database_x),
                                           s.query_y, s.database_y)
    # Random codes give mAP about 0.1 (10 balanced classes); every method finds real structure.
    assert value > 0.2


def test_itq_rotation_is_orthogonal_and_lowers_quantization_loss(digits_split):
    x = digits_split.train_x.reshape(len(digits_split.train_x), -1).astype(np.float64)
    one = baselines.ITQ(bits=16, seed=0, iterations=1).fit(x)
    many = baselines.ITQ(bits=16, seed=0, iterations=50).fit(x)
    pca = baselines.PCAH(bits=16).fit(x).projection_
    rotation = pca.T @ many.projection_
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(16), atol=1e-8)

    def loss(method):
        v = (x - method.mean_) @ method.projection_
        return np.sum((np.where(v >= 0, 1.0, -1.0) - v) ** 2)

    assert loss(many) < loss(one)


def test_pcah_bits_follow_principal_components():
    # Data spread along the first axis (std 10) and the second (std 1): bit 0 is the sign of the
    # first coordinate (after centring), bit 1 the sign of the second.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 2)) * [10.0, 1.0]
    method = baselines.PCAH(bits=2).fit(x)
    bits = codes.unpack(method.encode(x), 2)
    centred = x - x.mean(0)
    agree0 = np.mean(bits[:, 0] == (centred[:, 0] * np.sign(method.projection_[0, 0]) >= 0))
    assert agree0 > 0.99


def test_sph_balls_hold_about_half_the_points(digits_split):
    x = digits_split.train_x
    bits = codes.unpack(baselines.SpH(bits=16, seed=0).fit(x).encode(x), 16)
    np.testing.assert_allclose(bits.mean(axis=0), 0.5, atol=0.05)


def test_sh_on_uniform_1d_data_uses_sinusoid_modes():
    # On 1-D data the modes are k = 1, 2, 3 (smallest eigenvalues); mode 1 splits the interval at its
    # middle, so bit 0 is 1 on the lower half (sin(pi/2 + pi*t) >= 0 for t <= 1/2).
    x = np.linspace(0, 1, 1001)[:, None]
    method = baselines.SH(bits=3).fit(x)
    assert method.mode_.tolist() == [1, 2, 3]
    bits = codes.unpack(method.encode(x), 3)
    np.testing.assert_array_equal(bits[:, 0], (np.linspace(0, 1, 1001) <= 0.5).astype(np.uint8))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="`bits` must be a positive integer number of bits, got int 0"):
        baselines.ITQ(bits=0)
    with pytest.raises(ValueError, match="`x` must be finite, got 1 NaN/inf"):
        baselines.LSH(bits=4).fit(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="`bits` must be at most the feature dimension \\(2\\).*bits=4"):
        baselines.ITQ(bits=4).fit(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="not fitted yet"):
        baselines.ITQ(bits=4).encode(np.zeros((5, 8)))
    with pytest.raises(ValueError, match="`x` must have 8 features per item \\(as in fit\\), got 3"):
        baselines.LSH(bits=4).fit(np.random.default_rng(0).standard_normal((5, 8))).encode(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="one of the baselines"):
        baselines.get("nope")
