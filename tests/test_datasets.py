import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from tests.helpers import MNIST_10K, needs_mnist
from tfhash import datasets


def test_make_split_draws_queries_per_class_and_trains_on_database(rng):
    x = rng.random((300, 4)).astype(np.float32)
    y = np.repeat(np.arange(3), 100)
    split = datasets.make_split(x, y, queries_per_class=10, seed=1)
    assert np.bincount(split.query_y).tolist() == [10, 10, 10]
    assert split.database_x.shape[0] == 270
    assert split.train_is_database
    np.testing.assert_array_equal(split.train_x, split.database_x)
    # queries and database partition the data
    rows = {tuple(r) for r in np.concatenate([split.query_x, split.database_x])}
    assert len(rows) == 300
    again = datasets.make_split(x, y, queries_per_class=10, seed=1)
    np.testing.assert_array_equal(again.query_x, split.query_x)
    other = datasets.make_split(x, y, queries_per_class=10, seed=2)
    assert not np.array_equal(other.query_x, split.query_x)


def test_training_subset_options(rng):
    x = rng.random((300, 2)).astype(np.float32)
    y = np.repeat(np.arange(3), 100)
    split = datasets.make_split(x, y, queries_per_class=10, train_per_class=20, seed=0)
    assert np.bincount(split.train_y).tolist() == [20, 20, 20]
    assert split.database_x.shape[0] == 270 and not split.train_is_database
    held_out = datasets.make_split(x, y, queries_per_class=10, train_size=50, disjoint_train=True, seed=0)
    assert held_out.database_x.shape[0] == 220 and held_out.train_x.shape[0] == 50
    train_rows = {tuple(r) for r in held_out.train_x}
    assert not train_rows & {tuple(r) for r in held_out.database_x}


def test_multilabel_split_and_properties(rng):
    x = rng.random((50, 3)).astype(np.float32)
    y = (rng.random((50, 5)) < 0.3).astype(np.int64)
    split = datasets.make_split(x, y, num_queries=8, seed=0)
    assert split.multilabel and split.num_classes == 5 and split.query_y.shape == (8, 5)
    with pytest.raises(ValueError, match="`num_queries` is required for multi-label `y`"):
        datasets.make_split(x, y)


def test_tf_data_views(rng):
    split = datasets.make_split(rng.random((40, 2, 2, 1)).astype(np.float32), np.repeat([0, 1], 20),
                                queries_per_class=5)
    batches = list(split.dataset("train", batch_size=8, labels=True, shuffle=True))
    assert sum(b[0].shape[0] for b in batches) == 30 and batches[0][0].shape[1:] == (2, 2, 1)
    assert next(iter(split.dataset("query"))).shape == (2, 2, 1)


def test_digits_is_offline_and_in_unit_range():
    x, y = datasets.load_digits()
    assert x.shape == (1797, 8, 8, 1) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0 and set(np.unique(y)) == set(range(10))
    split = datasets.load("digits", queries_per_class=10)
    assert split.query_x.shape[0] == 100 and split.name == "digits"


def _write_idx(path, array):
    codes = {np.uint8: 0x08, np.int32: 0x0C}
    header = struct.pack(">BBBB", 0, 0, codes[array.dtype.type], array.ndim)
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(array.dtype.newbyteorder(">")).tobytes())


def test_idx_files_round_trip(tmp_path, rng):
    images = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 6).astype(np.uint8)
    _write_idx(tmp_path / "img.gz", images)
    _write_idx(tmp_path / "lab.gz", labels)
    x, y = datasets.load_mnist_idx(tmp_path / "img.gz", tmp_path / "lab.gz")
    assert x.shape == (6, 28, 28, 1)
    np.testing.assert_allclose(x[..., 0], images / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y, labels)
    _write_idx(tmp_path / "big.gz", rng.integers(-5, 5, (3, 2)).astype(np.int32))
    assert datasets.read_idx(tmp_path / "big.gz").dtype == np.int32


@needs_mnist
def test_real_mnist_10k_files():
    x, y = datasets.load_mnist_idx(os.path.join(MNIST_10K, "t10k-images-idx3-ubyte.gz"),
                                   os.path.join(MNIST_10K, "t10k-labels-idx1-ubyte.gz"))
    assert x.shape == (10000, 28, 28, 1) and 0.0 <= x.min() and x.max() <= 1.0
    assert np.bincount(y).min() == 892 and np.bincount(y).max() == 1135


def test_cifar10_python_batches(tmp_path, rng):
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": data, b"labels": [1, 2, 3, 4]}, f)
    x, y = datasets.load_cifar10_batches(str(tmp_path), batches=["data_batch_1"])
    assert x.shape == (4, 32, 32, 3) and y.tolist() == [1, 2, 3, 4]
    # channel-first rows: the red plane comes first
    assert x[0, 0, 1, 0] == pytest.approx(data[0, 1] / 255.0)
    assert x[0, 0, 0, 1] == pytest.approx(data[0, 1024] / 255.0)


def test_cifar10_batches_refuse_arbitrary_pickles(tmp_path):
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": os.system, b"labels": []}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        datasets.load_cifar10_batches(str(tmp_path), batches=["data_batch_1"])
    with pytest.raises(ValueError, match="missing \\['test_batch'\\]"):
        datasets.load_cifar10_batches(str(tmp_path), batches=["data_batch_1", "test_batch"])


def _write_vecs(path, array, dtype):
    with open(path, "wb") as f:
        for row in array:
            f.write(np.int32(row.shape[0]).tobytes())
            f.write(row.astype(dtype).tobytes())


@pytest.mark.parametrize("ext,dtype", [(".fvecs", np.float32), (".bvecs", np.uint8), (".ivecs", np.int32)])
def test_vecs_files(tmp_path, rng, ext, dtype):
    array = rng.integers(0, 200, (5, 7)).astype(dtype)
    _write_vecs(tmp_path / f"x{ext}", array, dtype)
    got = datasets.read_features(tmp_path / f"x{ext}")
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, array)
    np.testing.assert_array_equal(datasets.read_features(tmp_path / f"x{ext}", max_items=2), array[:2])


def test_npy_features_without_pickle(tmp_path, rng):
    array = rng.random((4, 3)).astype(np.float32)
    np.save(tmp_path / "f.npy", array)
    np.testing.assert_array_equal(datasets.read_features(tmp_path / "f.npy"), array)
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError,
                       match="`path` must hold a plain numeric .npy array \\(pickled objects are refused\\)"):
        datasets.read_features(tmp_path / "o.npy")


def test_bad_feature_files(tmp_path):
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match="`path` must end in one of"):
        datasets.read_features(tmp_path / "x.txt")
    (tmp_path / "x.fvecs").write_bytes(np.int32(3).tobytes() + b"\0" * 5)
    with pytest.raises(ValueError, match="not a valid vecs file"):
        datasets.read_features(tmp_path / "x.fvecs")
    with pytest.raises(ValueError, match="existing feature file"):
        datasets.read_features(tmp_path / "missing.npy")


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_loading_through_mock_data(name, shape):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=40):
        split = datasets.load(name, num_queries=5, seed=0)
    assert split.input_shape == shape and split.query_x.shape[0] == 5
    assert split.train_x.dtype == np.float32 and 0.0 <= split.train_x.min() <= split.train_x.max() <= 1.0


def test_tfds_without_network_says_how_to_supply_data(tmp_path, monkeypatch):
    # Force the offline path even on a machine with network.
    monkeypatch.setattr(datasets, "_host_reachable", lambda host: False)
    with pytest.raises(ValueError, match="not prepared in .*cannot be downloaded.*tfds build mnist.*data_dir"):
        datasets.load("mnist", data_dir=str(tmp_path))


def test_unknown_name_lists_known_sets():
    with pytest.raises(ValueError, match="`name` must be one of the known data sets \\['digits', 'cifar10'"):
        datasets.load("imagenet21k")


def test_bad_arrays_are_refused():
    with pytest.raises(ValueError, match="`x` must be finite, got 1 NaN/inf values"):
        datasets.make_split(np.array([[np.inf], [0.0]]), [0, 1])
    with pytest.raises(ValueError, match="`y` must have one row per item of `x` \\(2\\), got 3"):
        datasets.make_split(np.zeros((2, 1)), [0, 1, 1])
    with pytest.raises(ValueError, match="`queries_per_class` \\(100\\) must be smaller than every class size"):
        datasets.make_split(np.zeros((20, 1)), np.repeat([0, 1], 10))


def test_load_local_reads_idx_directories_cifar_batches_and_npz(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(30, 6, 6), dtype=np.uint8)
    labels = np.arange(30, dtype=np.uint8) % 3
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    with gzip.open(mnist / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 0x08, 3]) + np.array([30, 6, 6], ">u4").tobytes() + images.tobytes())
    with gzip.open(mnist / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 0x08, 1]) + np.array([30], ">u4").tobytes() + labels.tobytes())
    x, y = datasets.load_local(mnist)
    assert x.shape == (30, 6, 6, 1) and x.dtype == np.float32 and x.max() <= 1.0
    np.testing.assert_array_equal(y, labels)
    split = datasets.load(str(mnist), queries_per_class=2, seed=0)
    assert split.query_x.shape == (6, 6, 6, 1)

    cifar = tmp_path / "cifar"
    cifar.mkdir()
    batch = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}
    with open(cifar / "test_batch", "wb") as f:
        pickle.dump(batch, f)
    x, y = datasets.load_local(cifar)
    assert x.shape == (4, 32, 32, 3) and list(y) == [0, 1, 2, 3]

    np.savez(tmp_path / "arrays.npz", images=images, labels=labels)
    x, y = datasets.load_local(tmp_path / "arrays.npz")
    assert x.dtype == np.float32 and x.max() <= 1.0 and y.dtype == np.int64
    np.savez(tmp_path / "other.npz", a=images)
    with pytest.raises(ValueError, match="'images' and 'labels'"):
        datasets.load_local(tmp_path / "other.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither MNIST IDX files"):
        datasets.load_local(tmp_path / "empty")
    (mnist / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match="but not its labels"):
        datasets.load_local(mnist)


def test_gaussian_mixture_is_seeded_and_shaped():
    x, y = datasets.make_gaussian_mixture(500, 32, components=5, seed=1)
    again, _ = datasets.make_gaussian_mixture(500, 32, components=5, seed=1)
    assert x.shape == (500, 32) and x.dtype == np.float32 and set(np.unique(y)) <= set(range(5))
    np.testing.assert_array_equal(x, again)
    assert not np.array_equal(x, datasets.make_gaussian_mixture(500, 32, components=5, seed=2)[0])
    # Points of one component are closer to each other than to points of another, on average.
    a, b = x[y == y[0]], x[y != y[0]]
    assert np.linalg.norm(a[:, None] - a[None], axis=-1).mean() < np.linalg.norm(a[:, None] - b[None], axis=-1).mean()


def test_validation_queries_come_from_training_items_and_never_retrieve_themselves(rng):
    x = rng.random((600, 4)).astype(np.float32)
    y = np.repeat(np.arange(3), 200)
    plain = datasets.make_split(x, y, queries_per_class=10, seed=3)
    split = datasets.make_split(x, y, queries_per_class=10, validation_per_class=20, seed=3)
    np.testing.assert_array_equal(split.query_x, plain.query_x)  # the test queries of a seed do not move
    np.testing.assert_array_equal(split.train_x, plain.train_x)
    validation = split.validation()
    assert np.bincount(validation.query_y).tolist() == [20, 20, 20]
    rows = lambda a: {tuple(r) for r in a}  # noqa: E731
    assert rows(validation.query_x) <= rows(split.train_x)          # drawn from the training items
    assert not rows(validation.query_x) & rows(split.query_x)       # never test queries
    assert not rows(validation.query_x) & rows(validation.database_x)  # never their own neighbour
    assert len(validation.database_x) == len(split.train_x) - 60
    assert rows(validation.database_x) | rows(validation.query_x) == rows(split.train_x)
    counted = datasets.make_split(x, y, queries_per_class=10, num_validation=50, seed=3).validation()
    assert len(counted.query_x) == 50
    with pytest.raises(ValueError, match="no validation queries"):
        plain.validation()
    with pytest.raises(ValueError, match="`validation_per_class` \\(200\\) must be smaller"):
        datasets.make_split(x, y, queries_per_class=10, validation_per_class=200)


def test_partial_labels_keep_a_few_per_class_and_never_label_validation_queries(rng):
    x = rng.random((600, 4)).astype(np.float32)
    y = np.repeat(np.arange(3), 200)
    split = datasets.make_split(x, y, queries_per_class=10, validation_per_class=20, seed=3)
    labels = split.partial_labels(5, seed=1)
    assert labels.shape == split.train_y.shape and np.bincount(labels[labels >= 0]).tolist() == [5, 5, 5]
    np.testing.assert_array_equal(labels[labels >= 0], split.train_y[labels >= 0])
    assert np.all(labels[split.validation_index] == -1)
    np.testing.assert_array_equal(split.partial_labels(5, seed=1), labels)  # the seed decides
    assert not np.array_equal(split.partial_labels(5, seed=2), labels)
    with pytest.raises(ValueError, match="`labelled_per_class` \\(200\\) must be smaller"):
        split.partial_labels(200)


def test_npz_pixels_follow_one_rule_whatever_their_dtype(tmp_path, rng):
    pixels = rng.integers(0, 256, size=(12, 5, 5))
    labels = np.arange(12) % 3
    expected = (pixels / 255.0).astype(np.float32)[..., None]
    for dtype in (np.uint8, np.int16, np.int32, np.int64):  # integer pixels: 0-255, scaled, channel axis added
        np.savez(tmp_path / "a.npz", images=pixels.astype(dtype), labels=labels)
        x, y = datasets.load_local(tmp_path / "a.npz")
        assert x.shape == (12, 5, 5, 1) and x.dtype == np.float32
        np.testing.assert_allclose(x, expected, rtol=1e-6)
    np.savez(tmp_path / "a.npz", x=expected[..., 0].astype(np.float64), y=labels[:, None])  # float in [0, 1]
    x, y = datasets.load_local(tmp_path / "a.npz")
    assert x.shape == (12, 5, 5, 1) and y.shape == (12,)
    refused = {
        "integer images with values in \\[-3, 255\\]": (
            np.where(pixels == pixels.max(), 255, pixels) - 3 * (pixels == pixels.min()), labels),
        "integer images with values in \\[0, 1000\\]": (np.where(pixels == pixels.max(), 1000, pixels), labels),
        "float images with values in \\[0, 255\\]; float pixels must be in \\[0, 1\\]": (
            np.where(pixels == pixels.max(), 255, pixels).astype(np.float32) * (pixels > 0) , labels),
        "NaN or inf": (np.where(pixels == 0, np.nan, 0.5), labels),
        "images \\[n, height, width\\(, channels\\)\\]": (pixels.reshape(12, 25), labels),
        "integer class labels \\[n\\] with one per image \\(12\\)": (pixels.astype(np.uint8), labels[:5]),
    }
    for message, (images, y) in refused.items():
        np.savez(tmp_path / "bad.npz", images=images, labels=y)
        with pytest.raises(ValueError, match=message):
            datasets.load_local(tmp_path / "bad.npz")


@pytest.mark.parametrize("ext", [".npy", ".fvecs"])
@pytest.mark.parametrize("max_items", [0, -1, 2.5, True])
def test_read_features_refuses_a_max_items_that_is_not_a_positive_count(tmp_path, rng, ext, max_items):
    array = rng.random((5, 3)).astype(np.float32)
    if ext == ".npy":
        np.save(tmp_path / "x.npy", array)
    else:
        _write_vecs(tmp_path / "x.fvecs", array, np.float32)
    with pytest.raises(ValueError, match="`max_items` must be a positive integer"):
        datasets.read_features(tmp_path / f"x{ext}", max_items=max_items)
    np.testing.assert_array_equal(datasets.read_features(tmp_path / f"x{ext}", max_items=4), array[:4])
    np.testing.assert_array_equal(datasets.read_features(tmp_path / f"x{ext}", max_items=99), array)


def test_the_download_host_probe_tells_names_that_resolve():
    assert datasets._host_reachable("localhost")
    assert not datasets._host_reachable("tfhash.invalid")  # RFC 2606: .invalid names never resolve
