"""Training from a folder of images: ``tfhash.sources.image_folder`` and ``tfhash.fit(scheme, "folder/")``."""

import os

import numpy as np
import pytest
from PIL import Image

import tfhash
from tfhash import sources


def _photos(folder, per_class=6, classes=("cats", "dogs"), seed=0):
    """Generated photos of varied sizes and formats in one sub-folder per class, and files no image reader takes."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            size = (int(rng.integers(40, 300)), int(rng.integers(40, 300)))
            pixels = rng.integers(0, 256, size[::-1] + (3,), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i:02d}.{'jpg' if i % 2 else 'png'}")
    (folder / classes[0] / "broken.jpg").write_bytes(b"not an image")  # listed, cannot be decoded
    (folder / classes[0] / "notes.txt").write_text("not listed")
    (folder / classes[1] / ".hidden.png").write_bytes(b"not listed either")
    return folder


def test_a_folder_becomes_batches_of_pixels_and_sub_folder_labels_without_the_files_it_cannot_read(tmp_path):
    folder = _photos(tmp_path / "photos")
    with pytest.warns(UserWarning, match=r"skipped cats/broken\.jpg"):
        data = sources.image_folder(folder, image_size=(32, 48), batch_size=5, seed=1)
    assert data.class_names == ["cats", "dogs"]
    batches = list(data.as_numpy_iterator())
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert images.dtype == np.uint8 and images.shape == (12, 32, 48, 3)
    assert sorted(labels.tolist()) == [0] * 6 + [1] * 6
    again = np.concatenate([b[1] for b in sources.image_folder(folder, image_size=(32, 48), batch_size=5, seed=1)])
    assert labels.tolist() == again.tolist()  # one seed, one order
    plain = sources.image_folder(folder, image_size=(8, 8), labels=None, shuffle=False, batch_size=64)
    first = next(iter(plain)).numpy()
    expected = sources.read_image(folder / "cats" / "00.png", (8, 8, 3))[0]
    np.testing.assert_array_equal(first[0], np.round(expected * 255).astype(np.uint8))


def test_a_file_removed_after_the_folder_was_read_is_left_out_instead_of_ending_training(tmp_path):
    folder = _photos(tmp_path / "photos")
    with pytest.warns(UserWarning, match="skipped"):
        data = sources.image_folder(folder, image_size=(16, 16), batch_size=4)
    (folder / "dogs" / "03.jpg").unlink()
    assert sum(len(batch[0]) for batch in data.as_numpy_iterator()) == 11


def test_bad_folder_arguments_are_refused_by_name(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        sources.image_folder(tmp_path / "empty")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(flat / "a.png")
    with pytest.raises(ValueError, match="`labels`='inferred' needs every image .* in a sub-folder"):
        sources.image_folder(flat)
    with pytest.raises(ValueError, match="`channels` must be 1 or 3, got 2"):
        sources.image_folder(flat, labels=None, channels=2)
    with pytest.raises(ValueError, match="`x` as a path must be a folder of images"):
        tfhash.fit("greedyhash", str(flat / "a.png"), bits=8, epochs=1)
    with pytest.raises(ValueError, match="`y` must be None when `x` is a folder"):
        tfhash.fit("greedyhash", flat, np.zeros(1), bits=8, epochs=1)


@pytest.mark.parametrize("name", ["greedyhash", "dshgan"])
def test_fit_trains_on_a_folder_read_from_disk_labelled_by_its_sub_folders(name, tmp_path):
    folder = _photos(tmp_path / "photos", per_class=4)
    with pytest.warns(UserWarning, match="skipped cats/broken.jpg"):
        hasher = tfhash.fit(name, os.fspath(folder), bits=8, epochs=1, batch_size=4, verbose=0)
    assert hasher.model.item_shape == sources.IMAGE_FOLDER_SIZE + (3,)
    if hasher.model.needs_labels:
        assert hasher.model.num_classes == 2
    codes = hasher.encode(sources.read_image(folder / "dogs" / "01.jpg", hasher.model.item_shape))
    assert codes.shape == (1, 1)


@pytest.mark.e2e  # a fit, an export and a build: the end-to-end tier
def test_an_encoder_trained_on_a_folder_exports_and_indexes_that_folder_by_file_name(tmp_path):
    folder = _photos(tmp_path / "photos", per_class=4)
    with pytest.warns(UserWarning, match="skipped"):
        hasher = tfhash.fit("greedyhash", folder, bits=16, epochs=1, batch_size=4, verbose=0)
    export = hasher.export(tmp_path / "encoder")
    with pytest.warns(UserWarning, match="skipped cats/broken.jpg"):
        index = tfhash.build(export, folder, tmp_path / "index", progress=False)
    listing = sources.list_image_files(folder)
    held = [i for i, f in enumerate(listing) if f != "cats/broken.jpg"]  # ids are places in the listing
    assert len(index) == len(held) and index.names(held) == [listing[i] for i in held]
    query = sources.read_image(folder / "dogs" / "02.png", hasher.model.item_shape)
    np.testing.assert_array_equal(tfhash.load(export).encode(query), hasher.encode(query))


@pytest.mark.e2e
def test_the_schemes_page_photos_block_runs_on_a_folder_without_downloaded_weights(tmp_path, monkeypatch):
    text = open(os.path.join(os.path.dirname(__file__), "..", "docs", "schemes.md"), encoding="utf-8").read()
    block = text.split("## Photos")[1].split("```python\n")[1].split("```")[0]
    assert 'backbone_weights="imagenet"' in block
    _photos(tmp_path / "photos", per_class=150)  # BGAN's default batch is 256 items
    monkeypatch.chdir(tmp_path)
    namespace = {}
    with pytest.warns(UserWarning, match="skipped"):
        exec(compile(block.replace('backbone_weights="imagenet"', "backbone_weights=None"), "docs/schemes.md",
                     "exec"), namespace)
    index = tfhash.index.load("photos.index")
    assert len(index) == 300 and namespace["hasher"].model.network_shape == (576,)


def test_a_folder_smaller_than_a_batch_is_refused_naming_the_batch(tmp_path):
    folder = _photos(tmp_path / "photos", per_class=3)
    with pytest.warns(UserWarning, match="skipped"), pytest.raises(
            ValueError, match=r"`x` folder .* must hold at least one batch \(32 images it can decode\)"):
        tfhash.fit("greedyhash", str(folder), bits=8, batch_size=32)
