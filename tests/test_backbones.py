"""A backbone in front of HashGAN's and BGAN's networks: they work in its fixed feature space."""

import numpy as np
import pytest

import tfhash
from tests.helpers import counting_backbone


@pytest.mark.parametrize("scheme", ["hashgan", "bgan"])
def test_a_gan_works_in_a_fixed_backbone_s_feature_space_which_runs_once_per_item(scheme, tmp_path):
    x = np.random.default_rng(0).random((128, 8, 8, 3)).astype(np.float32)
    backbone, counter = counting_backbone()
    before = [w.numpy().copy() for w in backbone.trainable_weights]
    hasher = tfhash.fit(scheme, x, bits=8, epochs=3, batch_size=32, seed=0, verbose=0, backbone=backbone)
    model = hasher.model
    assert model.item_shape == (8, 8, 3) and model.network_shape == (16,)  # images in, features for the GAN
    # 1 item to check its output shape, each item once for three epochs, then the items fit encodes after
    # training to look for constant bits.
    assert counter.numpy() == 1 + 128 + 128
    for old, new in zip(before, backbone.trainable_weights):
        np.testing.assert_array_equal(old, new.numpy())
    scale = model.feature_range.scale.numpy()
    assert scale.shape == (16,) and np.all(scale > 0)
    codes = hasher.encode(x)
    assert codes.shape == (128, 1)
    exported = tfhash.load(hasher.export(str(tmp_path / "export")))
    np.testing.assert_array_equal(exported.encode(x), codes)  # the backbone and the scaling are in the export
    loaded = tfhash.Hasher.load(hasher.save(str(tmp_path / "saved")), hyperparameters={"backbone": backbone})
    np.testing.assert_array_equal(loaded.encode(x), codes)


@pytest.mark.parametrize("scheme", ["hashgan", "bgan"])
def test_a_gan_s_backbone_cannot_learn(scheme):
    x = np.zeros((64, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match=r"`train_backbone`=True: \w+'s generator and discriminator work in the "
                                         "backbone's feature space"):
        tfhash.fit(scheme, x, bits=8, backbone="mobilenet_v3_small", train_backbone=True)


@pytest.mark.e2e
@pytest.mark.parametrize("scheme", ["hashgan", "bgan"])
def test_a_gan_takes_a_named_backbone(scheme, tmp_path):
    x = np.random.default_rng(0).random((64, 32, 32, 3)).astype(np.float32)
    hasher = tfhash.fit(scheme, x, bits=8, epochs=1, batch_size=32, seed=0, verbose=0,
                        backbone="mobilenet_v3_small")
    assert hasher.model.network_shape == (576,)
    exported = tfhash.load(hasher.export(str(tmp_path / "export")))
    np.testing.assert_array_equal(exported.encode(x), hasher.encode(x))


@pytest.mark.parametrize("scheme", ["hashgan", "bgan"])
def test_without_a_backbone_a_gan_sees_a_32x32_copy_of_a_photo(scheme):
    scheme_cls = tfhash.schemes.get(scheme)

    def model(shape):
        return scheme_cls(bits=16, input_shape=shape)

    def trainable(built):
        return sum(int(np.prod(weight.shape)) for weight in built.trainable_weights)

    at_64, at_224 = model((64, 64, 3)), model((224, 224, 3))
    assert at_64.network_shape == at_224.network_shape == (32, 32, 3)
    assert trainable(at_64) == trainable(at_224) == trainable(model((32, 32, 3)))
    for small in ((28, 28, 1), (32, 32, 3), (8, 8, 1)):  # the small-image paths are unchanged
        assert model(small).network_shape == small and model(small).low_resolution is None
    # A copy averaged over 7x7 blocks: a photo of one colour per block is seen exactly.
    blocks = np.random.default_rng(0).random((1, 32, 32, 3)).astype(np.float32)
    photo = np.repeat(np.repeat(blocks, 7, axis=1), 7, axis=2)
    np.testing.assert_allclose(at_224.low_resolution(photo).numpy(), blocks, atol=1e-6)


@pytest.mark.e2e
@pytest.mark.parametrize("scheme", ["hashgan", "bgan"])
def test_a_gan_trains_on_photos_without_a_backbone(scheme, tmp_path):
    photos = np.random.default_rng(0).integers(0, 256, (64, 224, 224, 3), dtype=np.uint8)
    hasher = tfhash.fit(scheme, photos, bits=16, epochs=1, batch_size=32, verbose=0)
    codes = hasher.encode(photos)
    assert codes.shape == (64, 2)
    np.testing.assert_array_equal(tfhash.load(hasher.export(str(tmp_path / "export"))).encode(photos), codes)
