"""Random image augmentations for consistency and contrastive terms, shared by every scheme.

All functions take images ``[b, h, w, c]`` in [0, 1] and a stateless seed (a ``[2]`` int tensor) and
return images of the same shape in [0, 1]: the same seed gives the same result, so training stays
deterministic and resumable. ``draw`` chooses how the per-image random values are drawn; a scheme passes
``tfhash.distribution.batch_random`` so each example gets the same values however the batch is split across
replicas. The default draws them directly.

* Grey images (digits, clothes): :func:`affine` (random translation, rotation and zoom in one bilinear
  warp, zeros filled in).
* Colour images: :func:`crop_and_flip` (random translation by up to ``padding`` pixels with zeros filled
  in, the pad-and-crop of CIFAR training, plus a horizontal flip) and :func:`colour_jitter` (brightness,
  contrast and saturation).
* :func:`augment` picks by channel count: grey images get :func:`affine`, colour images crop, flip
  and jitter.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import tensorflow as tf

from tfhash import _validation, stateless


def _direct(op, shape, seed, **kwargs):
    return op(shape, seed, **kwargs)


def _salted(seed, salt):
    return tf.cast(seed, tf.int64) + tf.constant([0, 1_000_003], tf.int64) * salt


def _check_images(images):
    """``images`` as a float32 tensor, after checking that it is a batch of images."""
    if len(images.shape) != 4:
        raise ValueError(f"`images` must be a batch [b, h, w, c], got shape {tuple(images.shape)}.")
    return tf.convert_to_tensor(images, tf.float32)


@dataclasses.dataclass(frozen=True)
class Policy:
    """Strengths of the augmentations.

    Attributes:
        max_shift: largest translation, in pixels, of :func:`affine`.
        max_rotation: largest rotation, in degrees, of :func:`affine`.
        max_zoom: largest relative zoom in or out of :func:`affine` (0.1: scale in [0.9, 1.1]).
        padding: largest translation, in pixels, of :func:`crop_and_flip`.
        flip: whether :func:`crop_and_flip` mirrors half of the images.
        brightness, contrast, saturation: largest relative change of :func:`colour_jitter`.
    """

    max_shift: float = 2.0
    max_rotation: float = 10.0
    max_zoom: float = 0.1
    padding: int = 4
    flip: bool = True
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4

    def __post_init__(self):
        for name in ("max_shift", "max_rotation", "max_zoom", "padding", "brightness", "contrast", "saturation"):
            _validation.check_non_negative_number(getattr(self, name), name)
        if self.max_zoom >= 1:
            raise ValueError(f"`max_zoom` must be below 1 (a zoom factor in [1 - max_zoom, 1 + max_zoom]), "
                             f"got {self.max_zoom!r}.")


def affine(images: tf.Tensor, seed: tf.Tensor, *, max_shift: float = 2.0, max_rotation: float = 10.0,
           max_zoom: float = 0.1, draw: Callable = _direct) -> tf.Tensor:
    """Random translation (pixels), rotation (degrees) and zoom about the centre, one bilinear warp."""
    images = _check_images(images)
    batch = tf.shape(images)[0]
    height, width = float(images.shape[1]), float(images.shape[2])
    uniform = lambda shape, salt: draw(stateless.uniform, shape, _salted(seed, salt),  # noqa: E731
                                       minval=-1.0, maxval=1.0)
    shift = uniform([batch, 2], 0) * max_shift
    angle = uniform([batch], 1) * (max_rotation * math.pi / 180.0)
    zoom = 1.0 + uniform([batch], 2) * max_zoom
    # The transform maps output (x, y) to input: about the centre, rotate and scale by 1 / zoom, then shift.
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    a2 = cx - cos * cx + sin * cy + shift[:, 0]
    b2 = cy - sin * cx - cos * cy + shift[:, 1]
    zeros = tf.zeros([batch])
    transforms = tf.stack([cos, -sin, a2, sin, cos, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")


def crop_and_flip(images: tf.Tensor, seed: tf.Tensor, *, padding: int = 4, flip: bool = True,
                  draw: Callable = _direct) -> tf.Tensor:
    """Random translation by whole pixels up to ``padding`` (zeros filled in), then a horizontal flip of half
    of the images."""
    images = _check_images(images)
    batch = tf.shape(images)[0]
    shift = tf.round(draw(stateless.uniform, [batch, 2], _salted(seed, 0), minval=-1.0, maxval=1.0)
                     * padding)
    zeros, ones = tf.zeros([batch]), tf.ones([batch])
    transforms = tf.stack([ones, zeros, shift[:, 0], zeros, ones, shift[:, 1], zeros, zeros], axis=1)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3], fill_value=0.0,
        interpolation="NEAREST", fill_mode="CONSTANT")
    if flip:
        mirrored = draw(stateless.uniform, [batch, 1, 1, 1], _salted(seed, 1)) < 0.5
        out = tf.where(mirrored, tf.reverse(out, axis=[2]), out)
    return out


def colour_jitter(images: tf.Tensor, seed: tf.Tensor, *, brightness: float = 0.4, contrast: float = 0.4,
                  saturation: float = 0.4, draw: Callable = _direct) -> tf.Tensor:
    """Per-image random brightness, contrast and saturation factors in [1 - s, 1 + s]; grey images get
    brightness and contrast only."""
    images = _check_images(images)
    batch = tf.shape(images)[0]

    def factor(strength, salt):
        return 1.0 + strength * draw(stateless.uniform, [batch, 1, 1, 1], _salted(seed, salt),
                                     minval=-1.0, maxval=1.0)

    out = images * factor(brightness, 0)
    mean = tf.reduce_mean(out, axis=[1, 2, 3], keepdims=True)
    out = mean + (out - mean) * factor(contrast, 1)
    if images.shape[-1] == 3:
        grey = tf.reduce_mean(out, axis=-1, keepdims=True)
        out = grey + (out - grey) * factor(saturation, 2)
    return tf.clip_by_value(out, 0.0, 1.0)


def augment(images: tf.Tensor, seed: tf.Tensor, policy: Policy | None = None, draw: Callable = _direct) -> tf.Tensor:
    """One random view: :func:`affine` for grey images, :func:`crop_and_flip` + :func:`colour_jitter` for
    colour ones, with the strengths of ``policy`` (a :class:`Policy`; default ``Policy()``)."""
    images = _check_images(images)
    policy = Policy() if policy is None else policy
    if images.shape[-1] == 3:
        out = crop_and_flip(images, _salted(seed, 10), padding=policy.padding, flip=policy.flip, draw=draw)
        return colour_jitter(out, _salted(seed, 11), brightness=policy.brightness, contrast=policy.contrast,
                             saturation=policy.saturation, draw=draw)
    return affine(images, _salted(seed, 12), max_shift=policy.max_shift, max_rotation=policy.max_rotation,
                  max_zoom=policy.max_zoom, draw=draw)
