"""Known answers of the shared augmentations: fixed draws give exact warps."""

import numpy as np
import pytest
import tensorflow as tf

from tfhash import augment

SEED = tf.constant([3, 4], tf.int64)


def constant_draw(value):
    """A ``draw`` that returns ``value`` everywhere (the upper end of uniform(-1, 1) for 1.0)."""
    def draw(op, shape, seed, **kwargs):
        return tf.fill(shape, tf.constant(value, tf.float32))
    return draw


def blob():
    x = np.zeros((2, 9, 9, 1), np.float32)
    x[:, 2, 6] = 1.0  # one pixel off centre: row 2, column 6
    return x


def test_affine_with_full_draws_shifts_rotates_and_zooms_exactly():
    x = blob()
    shifted = augment.affine(x, SEED, max_shift=1.0, max_rotation=0.0, max_zoom=0.0, draw=constant_draw(1.0)).numpy()
    expected = np.zeros_like(x)
    expected[:, 1, 5] = 1.0  # output (x, y) reads input (x + 1, y + 1): content moves up-left by one
    np.testing.assert_allclose(shifted, expected, atol=1e-5)
    turned = augment.affine(x, SEED, max_shift=0.0, max_rotation=90.0, max_zoom=0.0, draw=constant_draw(1.0)).numpy()
    np.testing.assert_allclose(turned[0, :, :, 0], np.rot90(x[0, :, :, 0], k=1), atol=1e-5)
    zoomed = augment.affine(x, SEED, max_shift=0.0, max_rotation=0.0, max_zoom=0.5, draw=constant_draw(-1.0)).numpy()
    expected = np.zeros_like(x)
    expected[:, 3, 5] = 1.0  # zoom 0.5 reads the input at twice the offset from the centre (4, 4): content shrinks
    np.testing.assert_allclose(zoomed, expected, atol=1e-5)


def test_no_strength_is_the_identity_and_seeds_are_reproducible():
    x = np.random.default_rng(0).random((4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(augment.affine(x, SEED, max_shift=0, max_rotation=0, max_zoom=0).numpy(), x, atol=1e-6)
    np.testing.assert_allclose(augment.crop_and_flip(x, SEED, padding=0, flip=False).numpy(), x)
    np.testing.assert_allclose(augment.colour_jitter(x, SEED, brightness=0, contrast=0, saturation=0).numpy(), x,
                               atol=1e-6)
    first, again = augment.augment(x, SEED).numpy(), augment.augment(x, SEED).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, augment.augment(x, tf.constant([3, 5], tf.int64)).numpy())
    assert first.shape == x.shape and first.min() >= 0.0 and first.max() <= 1.0


def test_crop_and_flip_shift_whole_pixels_and_mirror():
    x = blob()
    moved = augment.crop_and_flip(x, SEED, padding=2, draw=constant_draw(1.0)).numpy()  # no flip: 1.0 >= 0.5
    expected = np.zeros_like(x)
    expected[:, 0, 4] = 1.0
    np.testing.assert_array_equal(moved, expected)
    mirrored = augment.crop_and_flip(x, SEED, padding=2, draw=constant_draw(0.0)).numpy()  # shift 0, flip
    np.testing.assert_array_equal(mirrored, x[:, :, ::-1])


def test_colour_jitter_factors_and_grey_images():
    x = np.random.default_rng(1).random((3, 4, 4, 3)).astype(np.float32) * 0.5
    darker = augment.colour_jitter(x, SEED, brightness=0.5, contrast=0, saturation=0, draw=constant_draw(-1.0)).numpy()
    np.testing.assert_allclose(darker, x * 0.5, atol=1e-6)
    grey = augment.colour_jitter(x, SEED, brightness=0, contrast=0, saturation=1.0, draw=constant_draw(-1.0)).numpy()
    np.testing.assert_allclose(grey, np.repeat(x.mean(axis=-1, keepdims=True), 3, axis=-1), atol=1e-6)
    flat = augment.colour_jitter(x, SEED, brightness=0, contrast=1.0, saturation=0, draw=constant_draw(-1.0)).numpy()
    np.testing.assert_allclose(flat, np.broadcast_to(x.mean(axis=(1, 2, 3), keepdims=True), x.shape), atol=1e-6)
    single = augment.colour_jitter(x[..., :1], SEED, saturation=1.0, draw=constant_draw(-1.0))
    assert single.shape == (3, 4, 4, 1)


def test_augment_picks_by_channels_and_checks_its_input():
    grey = blob()
    np.testing.assert_allclose(augment.augment(grey, SEED, augment.Policy(max_shift=1, max_rotation=0, max_zoom=0),
                                               draw=constant_draw(1.0)).numpy()[:, 1, 5], 1.0, atol=1e-5)
    with pytest.raises(ValueError, match=r"`images` must be a batch \[b, h, w, c\], got shape \(9, 9\)"):
        augment.augment(np.zeros((9, 9), np.float32), SEED)
    with pytest.raises(ValueError, match="`max_zoom` must be below 1"):
        augment.Policy(max_zoom=1.0)
    with pytest.raises(ValueError, match="padding"):
        augment.Policy(padding=-1)
