"""Emergent segmentation of a trained image classifier, measured from its class-token attention.

    images -> model forward -> last layer's attention A (B, K, N, N), N = 1 + n
      -> a = A[:, :, 0, 1:]                   the cls token's attention over the n patches
      -> mask: per image and head, the fewest patches holding MASS (60%) of the mass of a
      -> IoU of each head's mask with the ground-truth mask, per class; the best head per class
      -> mIoU = mean over classes of the best head's IoU

For CRATE the attention is the MSSA similarity softmax_j(<U_k^T z_cls, U_k^T z_j> / sqrt(p))
of the last layer; for ViT the query-key attention softmax_j(q_cls . k_j / sqrt(p)). Both
models expose it through ``attention_maps()`` (the cached softmax of the last forward).

IoU of head k on class c: the intersections summed over the images of class c, divided
by the unions summed over the same images (the usual semantic-segmentation count, with
a head's mask as the prediction of "object"). A class whose summed union is 0 (no
predicted and no true patch) has no IoU (nan) and is left out of the mean.

Ground truth on images without masks (the bundled digits): a pixel is foreground when its
intensity (mean over channels, images in [0, 1]) exceeds PIXEL_THRESHOLD; a patch is
foreground when at least PATCH_FRACTION of its pixels are.

The PCA view: the first three principal components of the last layer's patch tokens
(the cls token left out), fitted over all patches of the batch, mapped to RGB; patches whose
first component, standardised (zero mean, unit variance), is at most PCA_THRESHOLD are
background (drawn black). The sign of a principal component is arbitrary: it is chosen so
that fewer patches lie above the threshold than below it (the object is the smaller part).
"""
import numpy as np

from .backend import to_device, to_numpy

MASS = 0.6               # share of the attention mass a head's mask keeps (DINO's 60%)
PIXEL_THRESHOLD = 0.5    # a pixel in [0, 1] is foreground above this intensity
PATCH_FRACTION = 0.25    # a patch is foreground when at least this share of its pixels is
PCA_THRESHOLD = 0.0      # the standardised first component above this is foreground


def check_fraction(name, v):
    """v as a float in (0, 1], or a ValueError naming ``name``."""
    v = float(v)
    if not 0.0 < v <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {v!r}")
    return v


# ------------------------------------------------------------------ geometry and inputs
def patch_grid(model):
    """(h, w): the patch grid of an image model (image size over patch size)."""
    (H, W) = model.image_hw
    if hasattr(model, "patch_hw"):
        ph, pw = model.patch_hw
    else:
        p = model.config["patch_size"]
        ph, pw = (p, p) if np.isscalar(p) else tuple(p)
    return H // ph, W // pw


def _batch(images):
    """images as a NumPy (B, C, H, W) batch of at least one image."""
    images = np.asarray(to_numpy(images))
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a (B, C, H, W) batch of at least one image, got "
                         f"shape {images.shape}")
    return images


def _in_eval_batches(model, images, batch_size, features):
    """concatenate_b features(x_b), NumPy float64, over batches x_b of ``batch_size`` images
    moved to the model's backend, the model in evaluation mode (its mode restored after)."""
    images = _batch(images)
    was_training = model.training
    model.eval()
    try:
        out = [to_numpy(features(to_device(images[i:i + batch_size], model.backend)))
               .astype(np.float64) for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return np.concatenate(out)


def cls_attention(model, images, batch_size=256):
    """The class token's attention over the patches in each head of the last layer.

    Inputs: model, an image classifier with ``attention_maps()`` (CRATE, CRATE-alpha, ViT);
    images (B, C, H, W) as the model reads them (normalised), NumPy or the model's backend.
    Returns: attention (B, K, n) NumPy float64; row b, head k is A_k[0, 1:] of the last
    layer, the cls row of the softmax without its weight on the cls token itself.
    """
    if not hasattr(model, "attention_maps"):
        raise TypeError(f"model must expose attention_maps() (an image transformer), got "
                        f"{type(model).__name__}")

    def cls_rows(x):
        model(x)
        return model.attention_maps()[-1][:, :, 0, 1:]          # (b, K, n) of (b, K, N, N)
    return _in_eval_batches(model, images, batch_size, cls_rows)


def patch_features(model, images, batch_size=256):
    """The last layer's patch tokens, cls token left out: (B, n, d) NumPy float64.

    CRATE / CRATE-alpha: Z^L, the last layer's output (``capture``); ViT: the normalised
    tokens of ``forward_features``.
    """

    def patches(x):
        if hasattr(model, "forward_features"):
            z = model.forward_features(x)                           # (b, N, d)
        else:
            model(x, capture=True)
            z = model.captured["z"][-1]                              # (b, N, d)
            model.captured = None
        return z[:, 1:]
    return _in_eval_batches(model, images, batch_size, patches)


# ------------------------------------------------------------------ masks
def attention_masks(attention, mass=MASS):
    """Per row, the fewest entries holding ``mass`` of the row's total: a boolean mask.

    Inputs: attention (..., n), non-negative; mass in (0, 1].
    Returns: mask (..., n) bool. Entries sorted in decreasing order are kept while the
    normalised mass before them is below ``mass`` (DINO's rule: ascending sort,
    cumulative sum / total, keep where it exceeds 1 - mass). A row of zeros keeps nothing.
    """
    mass = check_fraction("mass", mass)
    a = np.asarray(attention, dtype=np.float64)
    if a.ndim < 1 or a.shape[-1] == 0:
        raise ValueError(f"attention must have a last axis of patches, got shape {a.shape}")
    if not np.isfinite(a).all() or (a < 0).any():
        raise ValueError("attention must be finite and non-negative")
    order = np.argsort(-a, axis=-1, kind="stable")                  # decreasing
    sorted_a = np.take_along_axis(a, order, axis=-1)
    total = sorted_a.sum(axis=-1, keepdims=True)
    before = (np.cumsum(sorted_a, axis=-1) - sorted_a) / np.where(total > 0, total, 1.0)
    keep_sorted = (before < mass) & (total > 0)
    mask = np.zeros(a.shape, dtype=bool)
    np.put_along_axis(mask, order, keep_sorted, axis=-1)
    return mask


def ground_truth(images, patch_size, pixel_threshold=PIXEL_THRESHOLD,
                 patch_fraction=PATCH_FRACTION):
    """Foreground patches of images in [0, 1] (or of pixel masks).

    A pixel is foreground when its mean over channels exceeds ``pixel_threshold``; a patch
    when at least ``patch_fraction`` of its pixels are. Inputs: images (B, C, H, W) or
    boolean pixel masks (B, H, W) (then used as they are); patch_size int or (p1, p2).
    Returns: (B, n) bool, patches in the models' row-major order (n = (H/p1)(W/p2)).
    """
    x = np.asarray(to_numpy(images))
    p1, p2 = (patch_size, patch_size) if np.isscalar(patch_size) else tuple(patch_size)
    patch_fraction = check_fraction("patch_fraction", patch_fraction)
    if x.ndim == 4:
        pixels = x.astype(np.float64).mean(axis=1) > pixel_threshold   # (B, H, W)
    elif x.ndim == 3:
        pixels = x.astype(bool)
    else:
        raise ValueError(f"images must be (B, C, H, W) or pixel masks (B, H, W), got shape "
                         f"{x.shape}")
    B, H, W = pixels.shape
    if H % p1 or W % p2:
        raise ValueError(f"patch_size {p1}x{p2} must divide the {H}x{W} images")
    share = pixels.reshape(B, H // p1, p1, W // p2, p2).mean(axis=(2, 4))   # (B, h, w)
    return (share >= patch_fraction).reshape(B, -1)


# ------------------------------------------------------------------ IoU
def iou_table(pred, truth, labels=None, num_classes=None):
    """IoU of every head's masks with the truth, per class.

    Inputs: pred (B, K, n) bool (a mask per head), truth (B, n) bool, labels (B,) ints in
    [0, num_classes) or None (all images one class).
    Returns: iou (K, C) float64: sum_b |pred & truth| / sum_b |pred | truth| over the images
    of each class; nan where that union is 0 or the class has no image.
    """
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.ndim != 3 or truth.shape != (pred.shape[0], pred.shape[2]):
        raise ValueError(f"pred must be (B, K, n) and truth (B, n), got {pred.shape} and "
                         f"{truth.shape}")
    B = pred.shape[0]
    labels = np.zeros(B, dtype=np.int64) if labels is None else np.asarray(labels)
    if labels.shape != (B,) or (B and labels.min() < 0):
        raise ValueError(f"labels must be (B,) = ({B},) non-negative ints, got shape "
                         f"{labels.shape}")
    C = int(num_classes) if num_classes is not None else int(labels.max(initial=-1)) + 1
    if B and labels.max() >= C:
        raise ValueError(f"labels must be below num_classes {C}, got {labels.max()}")
    inter = (pred & truth[:, None]).sum(axis=2)                       # (B, K)
    union = (pred | truth[:, None]).sum(axis=2)
    onehot = labels[:, None] == np.arange(C)[None, :]                  # (B, C)
    inter_c, union_c = inter.T @ onehot, union.T @ onehot              # (K, C)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union_c > 0, inter_c / np.maximum(union_c, 1), np.nan)


def miou(iou):
    """From iou (K, C): the best head per class, its IoU, the mIoU and each head's own mIoU.

    Returns: dict(miou (float; nan when no class has an IoU), best_heads (C,) ints, -1
    where a class has none, best_iou (C,), per_head (K,) mean over classes of each head).
    """
    iou = np.asarray(iou, dtype=np.float64)
    valid = ~np.isnan(iou)
    filled = np.where(valid, iou, -np.inf)
    best_heads = np.where(valid.any(axis=0), filled.argmax(axis=0), -1)
    best = filled.max(axis=0) if iou.size else np.zeros(0)
    best = np.where(np.isfinite(best), best, np.nan)
    has = ~np.isnan(best)
    per_head = np.array([iou[k, valid[k]].mean() if valid[k].any() else np.nan
                         for k in range(iou.shape[0])])
    return dict(miou=float(best[has].mean()) if has.any() else float("nan"),
                best_heads=best_heads, best_iou=best, per_head=per_head)


def chance_miou(truth, labels=None, heads=1, num_classes=None, mass=MASS, draws=5, seed=0):
    """The mIoU of random attention: the floor a model's mIoU is read against.

    Each head of each image draws its attention uniformly at random (a random patch order,
    weights in (0, 1)), is masked at ``mass`` and scored exactly as a model is, best head per
    class included. Inputs: truth (B, n) bool, labels (B,) or None, heads K.
    Returns: the mean mIoU over ``draws`` draws (float).
    """
    truth = np.asarray(truth, dtype=bool)
    rng = np.random.default_rng(seed)
    B, n = truth.shape
    scores = [miou(iou_table(attention_masks(rng.random((B, heads, n)), mass), truth, labels,
                             num_classes))["miou"] for _ in range(draws)]
    return float(np.mean(scores))


def segmentation_scores(model, images, masks, labels=None, num_classes=None, mass=MASS,
                        patch_fraction=PATCH_FRACTION, batch_size=256):
    """mIoU of a model's last-layer class-token attention against ground-truth masks.

    Inputs: images (B, C, H, W) as the model reads them; masks (B, n) bool patch masks or
    (B, H, W) bool pixel masks (reduced with ``patch_fraction``); labels (B,) or None.
    Returns: dict(miou, best_heads (C,), best_iou (C,), per_head (K,), iou (K, C),
    attention (B, K, n), pred (B, K, n), truth (B, n), labels (B,) or None).
    """
    attention = cls_attention(model, images, batch_size)
    B, K, n = attention.shape
    masks = np.asarray(to_numpy(masks))
    if masks.ndim == 3:
        h, w = patch_grid(model)
        masks = ground_truth(masks.astype(bool), (masks.shape[1] // h, masks.shape[2] // w),
                             patch_fraction=patch_fraction)
    if masks.shape != (B, n):
        raise ValueError(f"masks must be ({B}, {n}) patch masks or ({B}, H, W) pixel masks, "
                         f"got shape {masks.shape}")
    pred = attention_masks(attention, mass)
    iou = iou_table(pred, masks.astype(bool), labels, num_classes)
    return dict(miou(iou), iou=iou, attention=attention, pred=pred, truth=masks.astype(bool),
                labels=None if labels is None else np.asarray(labels))


def digit_scores(model, raw_images, labels, mean, std, mass=MASS,
                 pixel_threshold=PIXEL_THRESHOLD, patch_fraction=PATCH_FRACTION,
                 num_classes=None):
    """segmentation_scores on digits in [0, 1]: the truth from their pixels, the model fed
    (raw - mean) / std per channel (the task's normalisation)."""
    raw = np.asarray(raw_images, dtype=np.float32)
    h, w = patch_grid(model)
    truth = ground_truth(raw, (raw.shape[2] // h, raw.shape[3] // w), pixel_threshold,
                         patch_fraction)
    return segmentation_scores(model, normalise(raw, mean, std), truth, labels, num_classes,
                               mass)


def normalise(raw_images, mean, std):
    """(raw - mean_c) / std_c per channel, float32: images as a task's model reads them."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return (np.asarray(raw_images, dtype=np.float32) - m) / s


# ------------------------------------------------------------------ PCA view
def pca_view(features, grid, threshold=PCA_THRESHOLD):
    """The first three principal components of patch features as RGB, background black.

    Inputs: features (B, n, d) with n = h * w; grid (h, w); threshold on the standardised
    first component (PCA_THRESHOLD).
    Returns: rgb (B, h, w, 3) in [0, 1]; foreground (B, h, w) bool (first component above
    the threshold); components (B, n, 3), the scores before scaling (first one standardised
    and sign-fixed). Fewer than three components (d < 3 or too few patches) are zero.
    """
    f = np.asarray(features, dtype=np.float64)
    h, w = grid
    if f.ndim != 3 or f.shape[1] != h * w:
        raise ValueError(f"features must be (B, n, d) with n = {h}*{w}, got shape {f.shape}")
    B, n, d = f.shape
    x = f.reshape(B * n, d)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)                 # rows: directions
    scores = np.zeros((B * n, 3))
    m = min(3, vt.shape[0])
    scores[:, :m] = x @ vt[:m].T                                      # (B n, 3)
    first = scores[:, 0]
    sd = first.std()
    first = (first - first.mean()) / (sd if sd > 0 else 1.0)
    if (first > threshold).sum() > (first < -threshold).sum():       # object: the smaller side
        first = -first
    scores[:, 0] = first
    foreground = first > threshold
    lo, hi = scores.min(axis=0), scores.max(axis=0)
    rgb = (scores - lo) / np.where(hi > lo, hi - lo, 1.0)
    rgb[~foreground] = 0.0
    return (rgb.reshape(B, h, w, 3), foreground.reshape(B, h, w),
            scores.reshape(B, n, 3))


# ------------------------------------------------------------------ figures
def plot_attention_masks(raw_images, results, grid, path, names=None, rows=6):
    """Images, their ground-truth masks and each head's cls attention, one row per image.

    results: one or two dicts of segmentation_scores (two models side by side); names:
    their titles. Each head's panel shows its attention, with its 60%-mass mask outlined.
    """
    from .plots import figure, save
    results = list(results)
    names = list(names) if names is not None else [f"model {i + 1}" for i in
                                                   range(len(results))]
    raw = np.asarray(raw_images)
    rows = min(rows, len(raw))
    h, w = grid
    heads = [r["attention"].shape[1] for r in results]
    cols = 2 + sum(heads)
    fig, axes = figure(rows, cols, (1.3 * cols, 1.35 * rows))
    truth = results[0]["truth"]
    for i in range(rows):
        img = raw[i].transpose(1, 2, 0)
        axes[i, 0].imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray")
        axes[i, 1].imshow(truth[i].reshape(h, w), cmap="gray", vmin=0, vmax=1)
        c = 2
        for name, r in zip(names, results):
            for k in range(r["attention"].shape[1]):
                ax = axes[i, c]
                ax.imshow(r["attention"][i, k].reshape(h, w), cmap="viridis")
                fine = np.kron(r["pred"][i, k].reshape(h, w), np.ones((8, 8)))  # sharp edges
                xs, ys = (np.arange(8 * w) + 0.5) / 8 - 0.5, (np.arange(8 * h) + 0.5) / 8 - 0.5
                ax.contour(xs, ys, fine.astype(float), levels=[0.5], colors="red",
                           linewidths=0.8)
                if i == 0:
                    ax.set_title(f"{name}\nhead {k}", fontsize=7)
                c += 1
    axes[0, 0].set_title("image", fontsize=7)
    axes[0, 1].set_title("truth", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    title = ", ".join(f"{n}: mIoU {r['miou']:.3f}" for n, r in zip(names, results))
    fig.suptitle(f"class-token attention, last layer ({title})", fontsize=8)
    return save(fig, path)


def plot_pca(raw_images, rgb, path, rows=8, threshold=PCA_THRESHOLD):
    """Images above, the PCA view of their patch features below (background black)."""
    from .plots import figure, save
    raw = np.asarray(raw_images)
    cols = min(rows, len(raw))
    fig, axes = figure(2, cols, (1.3 * cols, 2.8))
    for j in range(cols):
        img = raw[j].transpose(1, 2, 0)
        axes[0, j].imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray")
        axes[1, j].imshow(rgb[j])
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"first three principal components of the last layer's patch tokens "
                 f"(first component > {threshold} kept)", fontsize=8)
    return save(fig, path)
