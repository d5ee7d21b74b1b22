"""Splitting, normalising and batching image datasets (augment.py distorts them).

All randomness comes from an explicit ``np.random.Generator`` that the
caller owns (and can checkpoint), so a run can be repeated or resumed
exactly. Batches are assembled on the CPU and moved to the model's backend
at the end.
"""
import numpy as np

from .. import backend
from ..functional._checks import check_array, check_class_labels, check_finite, is_int
from .augment import random_distort, random_shift


def _check_images_labels(images, labels):
    """Once per dataset, on the host: (n, C, H, W) images and n integer class indices."""
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise ValueError("images must be a NumPy array of shape (n, C, H, W), got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    if not isinstance(labels, np.ndarray):
        raise ValueError(f"labels must be a NumPy array of shape ({len(images)},), got "
                         f"{type(labels).__name__}")
    check_class_labels("labels", labels, len(images))
    check_finite("images", images)


def train_test_split(images, labels, n_test, seed=0):
    """Split into a train and a held-out part by a seeded random permutation.

    The same (n, n_test, seed) always gives the same split.
    Inputs: images (n, C, H, W); labels (n,); n_test, 0 < n_test < n; seed.
    Returns: (train_images, train_labels), (test_images, test_labels).
    """
    _check_images_labels(images, labels)
    n = len(images)
    if not isinstance(n_test, (int, np.integer)) or not 0 < n_test < n:
        raise ValueError(f"n_test must be an integer in (0, {n}), got {n_test!r}")
    order = np.random.default_rng(seed).permutation(n)
    test, train = order[:n_test], order[n_test:]
    return (images[train], labels[train]), (images[test], labels[test])


def channel_stats(images):
    """Per-channel mean and standard deviation over (n, H, W).

    Inputs: images (n, C, H, W). Returns: mean (C,), std (C,) float32.
    """
    mean = images.mean(axis=(0, 2, 3), dtype=np.float64)
    std = images.std(axis=(0, 2, 3), dtype=np.float64)
    if np.any(std == 0):
        raise ValueError(f"a channel of the images is constant (std {std.tolist()}): "
                         "cannot normalise it")
    return mean.astype(np.float32), std.astype(np.float32)


def _check_stats(images, mean, std):
    """Floating (n, C, H, W) images; a finite mean and a positive std, one per channel or
    one for all."""
    check_array("images", images, ndim=4, floating=False)
    if images.dtype.kind != "f":
        raise TypeError(f"images must be floating-point to normalise, got {images.dtype}; "
                        "convert with images.astype(np.float32) / 255")
    channels = images.shape[1]
    for name, value in (("mean", mean), ("std", std)):
        a = np.asarray(value, dtype=np.float64) if value is not None else np.zeros(0)
        if a.size not in (1, channels) or not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must hold one finite number per channel ({channels}) "
                             f"or one for all, got {value!r}")
    if np.any(np.asarray(std, dtype=np.float64) <= 0):
        raise ValueError(f"std must be positive in every channel, got {std!r}")


def normalize(images, mean, std):
    """(images - mean_c) / std_c per channel. images (n, C, H, W) -> same shape."""
    _check_stats(images, mean, std)
    return _normalized(images, mean, std)


def _normalized(images, mean, std):
    """normalize without its checks, for stats already checked (BatchLoader's)."""
    mean = np.asarray(mean, dtype=images.dtype).reshape(1, -1, 1, 1)   # (1, C, 1, 1)
    std = np.asarray(std, dtype=images.dtype).reshape(1, -1, 1, 1)
    return (images - mean) / std


def shard_bounds(n, parts):
    """Where the rows of a batch of ``n`` split into ``parts`` contiguous shards: parts + 1 ints.

    Shard i holds rows bounds[i]:bounds[i + 1]; sizes differ by at most one.
    """
    return np.linspace(0, n, parts + 1).round().astype(int)


class BatchLoader:
    """Minibatches of (images, labels) for one pass over a dataset.

    Each ``iter()`` is one epoch: with ``shuffle`` a fresh permutation is
    drawn from ``rng``; with ``max_shift`` > 0 every image is randomly
    translated by whole pixels (also drawn from ``rng``), or, where any of
    ``rotate``, ``zoom`` or ``warp`` is > 0, rotated, zoomed, translated by
    up to ``max_shift`` pixels and warped (``augment.random_distort``); then
    images are normalised with (mean, std) and moved to ``backend``. Every
    sample appears exactly once per epoch; the last batch is smaller unless
    ``drop_last``.

    Inputs: images (n, C, H, W) float on the CPU; labels (n,) non-negative
    integers (checked once, here: float labels are refused, never truncated);
    batch_size; rng, a Generator (needed when shuffling or distorting);
    rotate (degrees), zoom (fraction, < 1) and warp (pixels), >= 0;
    mean, std per channel (None: no normalisation); backend 'numpy'/'cupy';
    part, (rank, size) of a run split over processes: every batch is still
    drawn whole, but only the rows of shard ``rank`` of ``size``
    (``shard_bounds``, the rows that process trains on) are distorted.
    Yields: images (B, C, H, W), labels (B,) int64 on ``backend``.
    """

    def __init__(self, images, labels, batch_size, rng=None, shuffle=True, max_shift=0,
                 mean=None, std=None, drop_last=False, backend="numpy", rotate=0.0, zoom=0.0,
                 warp=0.0, part=(0, 1)):
        _check_images_labels(images, labels)
        if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(max_shift, (int, np.integer)) or max_shift < 0:
            raise ValueError(f"max_shift must be a non-negative integer, got {max_shift!r}")
        for name, value, high in (("rotate", rotate, 180.0), ("zoom", zoom, 1.0),
                                  ("warp", warp, None)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                    or not 0 <= value < (high or np.inf):
                raise ValueError(f"{name} must be a number in [0, {high or 'inf'}), "
                                 f"got {value!r}")
        if not (isinstance(part, tuple) and len(part) == 2
                and all(is_int(v) for v in part)
                and 0 <= part[0] < part[1]):
            raise ValueError(f"part must be (rank, size) with 0 <= rank < size, got {part!r}")
        distort = bool(rotate or zoom or warp)
        if (shuffle or max_shift or distort) and not isinstance(rng, np.random.Generator):
            raise TypeError("rng must be a np.random.Generator when shuffling, shifting or "
                            f"distorting, got {type(rng).__name__}")
        if drop_last and batch_size > len(images):
            raise ValueError(f"batch_size {batch_size} exceeds the {len(images)} samples and "
                             "drop_last is set: no batch would be produced")
        if mean is not None or std is not None:
            _check_stats(images, mean, std)       # once, not as a surprise at the first batch
        self.images, self.labels = images, labels.astype(np.int64, copy=False)
        self.batch_size, self.rng, self.shuffle = int(batch_size), rng, bool(shuffle)
        self.max_shift, self.drop_last, self.backend = int(max_shift), bool(drop_last), backend
        self.mean, self.std, self.part = mean, std, part
        self.distortion = dict(rotate=float(rotate), zoom=float(zoom), warp=float(warp)) \
            if distort else None

    def __len__(self):
        n, b = len(self.images), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        n = len(self.images)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            if self.distortion:
                rank, size = self.part
                lo, hi = shard_bounds(len(idx), size)[rank:rank + 2]
                x = random_distort(self.images[idx], self.rng, shift=self.max_shift,
                                   part=slice(lo, hi) if size > 1 else None,
                                   **self.distortion)
            else:
                x = random_shift(self.images[idx], self.max_shift, self.rng)
            if self.mean is not None:
                x = _normalized(x, self.mean, self.std)     # checked once, in __init__
            yield (backend.to_device(np.ascontiguousarray(x), self.backend),
                   backend.to_device(self.labels[idx], self.backend))
