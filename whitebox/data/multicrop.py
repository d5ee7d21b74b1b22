"""DINO's multi-crop augmentation in NumPy: 2 global crops and k local ones per image.

Each view is a random resized crop (torchvision's RandomResizedCrop: a box of
area s H W with s ~ U(scale) and aspect ratio r log-uniform in ``ratio``,
redrawn up to 10 times until it fits, else the largest centred box of a
clamped ratio), resized to a square by bilinear interpolation with
half-pixel centres (DINO resizes bicubically; bilinear keeps every output
pixel a convex combination of input pixels, so [0, 1] images stay in [0, 1]),
then optionally flipped left-right (off for digits, whose mirror images are
other shapes), then with probability ``jitter_p`` an intensity jitter:

    x <- clip((x - mean_x) c + mean_x) b,   b ~ U(1 - brightness, 1 + brightness),
                                            c ~ U(1 - contrast, 1 + contrast)

per image (mean over its pixels), clipped to ``value_range``. Every draw
comes from the Generator passed in, so one seed gives one set of views.
"""
import numpy as np

from ..functional._checks import check_positive_int, check_real, is_int


def crop_boxes(rng, n, H, W, scale, ratio=(3 / 4, 4 / 3), attempts=10):
    """Random resized crop boxes, torchvision's rule. Returns (n, 4) ints (top, left, h, w)."""
    boxes = np.empty((n, 4), dtype=np.int64)
    area = H * W
    log_ratio = np.log(ratio)
    for i in range(n):
        for _ in range(attempts):
            target = area * rng.uniform(*scale)
            r = np.exp(rng.uniform(*log_ratio))
            w = int(round(np.sqrt(target * r)))
            h = int(round(np.sqrt(target / r)))
            if 0 < w <= W and 0 < h <= H:
                top = int(rng.integers(0, H - h + 1))
                left = int(rng.integers(0, W - w + 1))
                boxes[i] = top, left, h, w
                break
        else:    # no box fitted: the whole image at a ratio clamped into range
            if W / H < ratio[0]:
                w, h = W, int(round(W / ratio[0]))
            elif W / H > ratio[1]:
                h, w = H, int(round(H * ratio[1]))
            else:
                h, w = H, W
            boxes[i] = (H - h) // 2, (W - w) // 2, h, w
    return boxes


def _bilinear_weights(start, length, size, full):
    """(n, size, full) rows of interpolation weights: output pixel s of each box samples the
    input at start + (s + 1/2) length / size - 1/2, clamped into the box."""
    src = start[:, None] + (np.arange(size) + 0.5) * (length[:, None] / size) - 0.5   # (n, size)
    src = np.clip(src, start[:, None], (start + length - 1)[:, None])
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, (start + length - 1)[:, None])
    frac = src - lo                                                                   # (n, size)
    grid = np.arange(full)                                                 # (full,)
    return ((1 - frac)[..., None] * (grid == lo[..., None])
            + frac[..., None] * (grid == hi[..., None]))                   # (n, size, full)


def resize_crops(images, boxes, size):
    """Each image's box resized to size x size, bilinear. images (B, C, H, W), boxes (B, 4).
    Returns: (B, C, size, size) in images' dtype."""
    B, C, H, W = images.shape
    Ry = _bilinear_weights(boxes[:, 0], boxes[:, 2], size, H)       # (B, size, H)
    Rx = _bilinear_weights(boxes[:, 1], boxes[:, 3], size, W)       # (B, size, W)
    out = np.einsum("bsh,bchw,btw->bcst", Ry, images, Rx, optimize=True)
    return out.astype(images.dtype, copy=False)                     # (B, C, size, size)


def jitter_intensity(images, rng, brightness=0.4, contrast=0.4, p=0.8, value_range=(0.0, 1.0)):
    """Per image with probability p: contrast c about the image mean, then brightness b,
    clipped to value_range (None: no clipping). Returns a new (B, C, H, W) array."""
    B = images.shape[0]
    b = rng.uniform(1 - brightness, 1 + brightness, size=B)
    c = rng.uniform(1 - contrast, 1 + contrast, size=B)
    apply = rng.random(B) < p
    mean = images.mean(axis=(1, 2, 3), keepdims=True)                 # (B, 1, 1, 1)
    out = ((images - mean) * c[:, None, None, None] + mean) * b[:, None, None, None]
    if value_range is not None:
        out = np.clip(out, *value_range)
    out = np.where(apply[:, None, None, None], out, images)          # the others untouched
    return out.astype(images.dtype, copy=False)


def _scale_pair(name, v):
    if not (isinstance(v, (tuple, list)) and len(v) == 2 and 0 < v[0] <= v[1] <= 1):
        raise ValueError(f"{name} must be a pair (low, high) with 0 < low <= high <= 1, got {v!r}")
    return (float(v[0]), float(v[1]))


class MultiCrop:
    """Views of a batch: ``views = MultiCrop(...)(images, rng)``.

    Inputs of the call: images (B, C, H, W) float, a NumPy Generator.
    Returns: a list of 2 + n_local arrays, the 2 global views (B, C, global_size,
    global_size) first, then the local ones (B, C, local_size, local_size).
    Defaults are DINO's: global scale (0.4, 1), local (0.05, 0.4), brightness and
    contrast 0.4 with probability 0.8; ``flip`` draws a left-right flip per view
    with probability 1/2.
    """

    def __init__(self, global_size, local_size, n_local, global_scale=(0.4, 1.0),
                 local_scale=(0.05, 0.4), flip=True, brightness=0.4, contrast=0.4,
                 jitter_p=0.8, value_range=(0.0, 1.0)):
        self.global_size = check_positive_int("global_size", global_size)
        self.local_size = check_positive_int("local_size", local_size)
        if not is_int(n_local) or n_local < 0:
            raise ValueError(f"n_local must be a non-negative integer, got {n_local!r}")
        self.n_local = int(n_local)
        self.global_scale = _scale_pair("global_scale", global_scale)
        self.local_scale = _scale_pair("local_scale", local_scale)
        self.flip = bool(flip)
        self.brightness = check_real("brightness", brightness, 0.0, 1.0)
        self.contrast = check_real("contrast", contrast, 0.0, 1.0)
        self.jitter_p = check_real("jitter_p", jitter_p, 0.0, 1.0)
        self.value_range = None if value_range is None else tuple(value_range)

    @property
    def n_crops(self):
        return 2 + self.n_local

    def view(self, images, rng, size, scale):
        """One random view of every image: crop, resize, flip, jitter."""
        B, _, H, W = images.shape
        out = resize_crops(images, crop_boxes(rng, B, H, W, scale), size)
        if self.flip:
            flip = rng.random(B) < 0.5
            out[flip] = out[flip, :, :, ::-1]
        return jitter_intensity(out, rng, self.brightness, self.contrast, self.jitter_p,
                                self.value_range)

    def __call__(self, images, rng):
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy Generator, got {type(rng).__name__}")
        if not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype.kind != "f":
            raise ValueError("images must be a float NumPy array (B, C, H, W), got "
                             f"{getattr(images, 'shape', type(images).__name__)}")
        return ([self.view(images, rng, self.global_size, self.global_scale) for _ in range(2)]
                + [self.view(images, rng, self.local_size, self.local_scale)
                   for _ in range(self.n_local)])
