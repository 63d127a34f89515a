"""Shallow hashing baselines measured beside the learned schemes: LSH, PCAH, ITQ, SpH, SH.

Each follows the scikit-learn shape: the constructor stores its arguments, ``fit(x)`` learns and
returns ``self`` (learned state ends in ``_``), ``encode(x)`` returns packed uint8 codes in the
``tfhash.codes`` convention, the same as the learned schemes. ``project(x)`` gives the continuous
outputs that are thresholded at ``threshold_``.

Images are flattened to vectors; features are centred on the training mean.
"""

from __future__ import annotations

import numpy as np

from tfhash import _validation
from tfhash import codes as codes_lib


class _Baseline:
    """What every baseline shares: argument checks, centring, binarisation and packing."""

    threshold_ = codes_lib.TANH_THRESHOLD

    def __init__(self, bits=32, seed=0):
        self.bits = _validation.check_bits(bits)
        self.seed = seed

    def __repr__(self):
        return f"{type(self).__name__}(bits={self.bits}, seed={self.seed})"

    def _flatten(self, x, name="x"):
        x = _validation.check_features(x, name)
        return x.reshape(x.shape[0], -1).astype(np.float64)

    def fit(self, x):
        """Learns the hash functions from ``x`` ``[n, ...]``; returns ``self``."""
        x = self._flatten(x)
        if x.shape[0] < 2:
            raise ValueError(f"`x` must hold at least 2 items to fit {type(self).__name__}, got {x.shape[0]}.")
        self.mean_ = x.mean(axis=0)
        self._fit(x - self.mean_, np.random.default_rng(self.seed))
        return self

    def project(self, x):
        """Continuous outputs ``[n, bits]``; bit k is 1 where output k >= ``threshold_``."""
        if not hasattr(self, "mean_"):
            raise ValueError(f"{type(self).__name__} is not fitted yet: call fit(x) before encode/project.")
        x = self._flatten(x)
        if x.shape[1] != self.mean_.shape[0]:
            raise ValueError(
                f"`x` must have {self.mean_.shape[0]} features per item (as in fit), got {x.shape[1]}."
            )
        return self._project(x - self.mean_)

    def encode(self, x):
        """Packed uint8 codes ``[n, ceil(bits / 8)]``."""
        return codes_lib.pack(codes_lib.binarize(self.project(x), self.threshold_))

    def fit_encode(self, x):
        return self.fit(x).encode(x)

    def _check_bits_fit_dims(self, dims):
        if self.bits > dims:
            raise ValueError(
                f"`bits` must be at most the feature dimension ({dims}) for {type(self).__name__}, "
                f"got bits={self.bits}."
            )


def _principal_directions(centred, count):
    """Top ``count`` principal directions ``[d, count]`` of centred data, largest variance first."""
    # Economy SVD of the data: right singular vectors are the covariance eigenvectors.
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    directions = vt[:count].T
    # Fix each direction's sign so results do not depend on the LAPACK build.
    signs = np.sign(directions[np.argmax(np.abs(directions), axis=0), np.arange(count)])
    return directions * signs


class LSH(_Baseline):
    """Locality-sensitive hashing: signs of random Gaussian projections (Charikar 2002; Gionis et al. 1999)."""

    def _fit(self, centred, rng):
        self.projection_ = rng.standard_normal((centred.shape[1], self.bits))

    def _project(self, centred):
        return centred @ self.projection_


class PCAH(_Baseline):
    """PCA hashing: signs of the top ``bits`` principal components (Wang et al. 2010)."""

    def _fit(self, centred, rng):
        self._check_bits_fit_dims(centred.shape[1])
        self.projection_ = _principal_directions(centred, self.bits)

    def _project(self, centred):
        return centred @ self.projection_


class ITQ(_Baseline):
    """Iterative quantization (Gong & Lazebnik, CVPR 2011): PCA, then a rotation that minimises the
    quantization loss ||B - V R||_F by alternating B = sign(V R) and orthogonal Procrustes for R.

    Args:
        bits: code length (at most the feature dimension).
        seed: seed of the random initial rotation.
        iterations: alternating steps; the paper uses 50 (Sec. 2.3).
    """

    def __init__(self, bits=32, seed=0, iterations=50):
        super().__init__(bits, seed)
        self.iterations = _validation.check_positive_int(iterations, "iterations")

    def _fit(self, centred, rng):
        self._check_bits_fit_dims(centred.shape[1])
        pca = _principal_directions(centred, self.bits)
        v = centred @ pca
        rotation, _ = np.linalg.qr(rng.standard_normal((self.bits, self.bits)))
        for _ in range(self.iterations):
            b = np.where(v @ rotation >= 0, 1.0, -1.0)
            u, _, wt = np.linalg.svd(v.T @ b)  # R = U W^T maximises tr(R^T V^T B)
            rotation = u @ wt
        self.projection_ = pca @ rotation

    def _project(self, centred):
        return centred @ self.projection_


class SpH(_Baseline):
    """Spherical hashing (Heo et al., CVPR 2012): bit k is 1 inside hypersphere k (centre p_k, radius t_k).

    Pivots move under pairwise forces until each ball holds half of the training points and each
    pair of balls shares a quarter (Sec. 3.2, tolerances eps_m = 0.1, eps_s = 0.15). Codes are
    compared with the ordinary Hamming distance like every tfhash code, not the paper's spherical
    Hamming distance, so that one index and one metric serve all schemes.

    Args:
        max_samples: training points used to place the spheres (a seeded subset of larger inputs).
        max_iterations: force iterations at most.
    """

    threshold_ = 0.0

    def __init__(self, bits=32, seed=0, max_samples=10000, max_iterations=100):
        super().__init__(bits, seed)
        self.max_samples = _validation.check_positive_int(max_samples, "max_samples")
        self.max_iterations = _validation.check_positive_int(max_iterations, "max_iterations")

    @staticmethod
    def _distances(points, pivots):
        sq = (points ** 2).sum(1)[:, None] - 2.0 * points @ pivots.T + (pivots ** 2).sum(1)[None, :]
        return np.sqrt(np.maximum(sq, 0.0))

    def _fit(self, centred, rng):
        if centred.shape[0] > self.max_samples:
            centred = centred[rng.choice(centred.shape[0], self.max_samples, replace=False)]
        m = centred.shape[0]
        pivots = centred[rng.choice(m, self.bits, replace=m < self.bits)].copy()
        quarter = m / 4.0
        off_diagonal = ~np.eye(self.bits, dtype=bool)
        for _ in range(self.max_iterations):
            dist = self._distances(centred, pivots)
            radii = np.median(dist, axis=0)
            inside = (dist <= radii).astype(np.float64)
            overlap = inside.T @ inside
            gap = overlap[off_diagonal] - quarter
            if np.abs(gap).mean() <= 0.1 * quarter and gap.std() <= 0.15 * quarter:
                break
            # f_{i<-j} = 1/2 (o_ij - m/4) / (m/4) (p_i - p_j); p_i moves by the mean force (Eq. 6-7).
            weight = 0.5 * (overlap - quarter) / quarter
            np.fill_diagonal(weight, 0.0)
            force = weight.sum(1)[:, None] * pivots - weight @ pivots
            pivots = pivots + force / self.bits
        self.pivots_ = pivots
        self.radii_ = np.median(self._distances(centred, pivots), axis=0)

    def _project(self, centred):
        return self.radii_ - self._distances(centred, self.pivots_)


class SH(_Baseline):
    """Spectral hashing (Weiss, Torralba & Fergus, NIPS 2008).

    Data are rotated by PCA; along each principal direction (range [a, b]) the 1-D Laplacian
    eigenfunctions are sin(pi/2 + k pi (y - a) / (b - a)) with eigenvalue (k pi / (b - a))^2.
    The ``bits`` eigenfunctions of smallest eigenvalue over all directions become the bits
    (sign of the eigenfunction).
    """

    def _fit(self, centred, rng):
        components = min(self.bits, centred.shape[1])
        self.pca_ = _principal_directions(centred, components)
        projected = centred @ self.pca_
        margin = 1e-9  # keeps extreme points strictly inside the interval
        self.low_ = projected.min(axis=0) - margin
        span = projected.max(axis=0) + margin - self.low_
        self.span_ = span
        # Enough modes per direction that the `bits` smallest eigenvalues are all candidates.
        max_mode = np.ceil((self.bits + 1) * span / span.max()).astype(int)
        direction = np.concatenate([np.full(k, i) for i, k in enumerate(max_mode)])
        mode = np.concatenate([np.arange(1, k + 1) for k in max_mode])
        eigenvalue = (mode * np.pi / span[direction]) ** 2
        chosen = np.argsort(eigenvalue, kind="stable")[: self.bits]
        self.direction_, self.mode_ = direction[chosen], mode[chosen]

    def _project(self, centred):
        projected = (centred @ self.pca_)[:, self.direction_]
        phase = (projected - self.low_[self.direction_]) / self.span_[self.direction_]
        return np.sin(np.pi / 2 + self.mode_ * np.pi * phase)


BASELINES = {"lsh": LSH, "pcah": PCAH, "itq": ITQ, "sph": SpH, "sh": SH}


def get(name: str) -> type:
    """The baseline class registered under ``name`` (case-insensitive)."""
    key = str(name).lower()
    if key not in BASELINES:
        raise ValueError(f"`name` must be one of the baselines {sorted(BASELINES)}, got {name!r}.")
    return BASELINES[key]
