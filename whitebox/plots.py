"""Figures of a CRATE training run, saved as PNG files.

- :func:`plot_curves`: loss and accuracy per epoch, train and held-out.
- :func:`plot_layer_measures`: per layer, the compression term Rc of the
  MSSA input on the layer's own subspaces, and the non-zero fraction of the
  ISTA output (1 - sparsity), one labelled line per drawn epoch (at most
  six, spread over the run): the paper's two measures of what each layer
  does.
- :func:`plot_attention`: the class token's attention over the patch grid,
  per head, for a few images.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot),
so nothing depends on a display or touches global plotting state.
"""
import numpy as np

from .backend import to_numpy


def figure(rows, cols, size):
    """A (Figure, rows x cols axes) pair, without pyplot (tasks draw their own figures with it)."""
    from matplotlib.figure import Figure   # imported here: plotting is optional work
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def save(fig, path):
    """Write ``fig`` as a PNG; returns the path."""
    fig.savefig(path, dpi=110)
    return path


def epochs_to_draw(history, most=6):
    """At most ``most`` records of ``history``, evenly spread, the first and the last always."""
    if len(history) <= most:
        return list(history)
    keep = sorted(set(np.linspace(0, len(history) - 1, most).round().astype(int).tolist()))
    return [history[i] for i in keep]


def legend_beside(ax, **kw):
    """The legend of ``ax`` to its right, outside the axes, so that it covers no line."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                     fontsize=8, **kw)


def plot_curves(history, path):
    """Loss and accuracy against epoch.

    Inputs: history, a list of metric dicts with keys epoch, train_loss,
    test_loss, train_acc, test_acc (accuracies as fractions); path of the PNG.
    Returns: path.
    """
    if not history:
        raise ValueError("history is empty: train at least one epoch before plotting")
    epochs = [h["epoch"] for h in history]
    fig, axes = figure(1, 2, (9, 3.5))
    ax_loss, ax_acc = axes[0]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["test_loss"] for h in history], "s-", label="held out")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.plot(epochs, [100 * h["train_acc"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [100 * h["test_acc"] for h in history], "s-", label="held out")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    from matplotlib.ticker import MaxNLocator
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # epochs are whole numbers
        ax.grid(alpha=0.3)
        ax.legend()
    return save(fig, path)


LAYER_TITLES = ("compression Rc of the MSSA input",
                "sparsity: non-zero fraction of the ISTA output")


def plot_layer_measures(history, path, titles=LAYER_TITLES):
    """Per-layer compression Rc and non-zero fraction, one labelled line per drawn epoch.

    Inputs: history, a list of metric dicts with keys epoch (or label), rc
    (one float per layer) and nonzero (one float per layer, 1 - fraction of
    exact zeros of Z^{l+1}); path of the PNG. At most six records are drawn,
    spread evenly over the run with the first and the last among them, each
    with its label in the legend; the title says when some were left out.
    titles: the two panels' titles (a standard transformer's measures differ).
    Returns: path.
    """
    history = [h for h in history if h.get("rc")]
    if not history:
        raise ValueError("history holds no per-layer measures (keys 'rc' and 'nonzero')")
    from matplotlib import colormaps
    cmap = colormaps["viridis"]
    shown = epochs_to_draw(history)
    fig, axes = figure(1, 2, (10, 3.5))
    ax_rc, ax_nz = axes[0]
    for i, h in enumerate(shown):
        color = cmap(0.9 - 0.8 * i / max(1, len(shown) - 1))   # early light, late dark
        label = h.get("label", f"epoch {h.get('epoch')}")
        layers = np.arange(1, len(h["rc"]) + 1)
        ax_rc.plot(layers, h["rc"], "o-", color=color, label=label)
        ax_nz.plot(layers, h["nonzero"], "o-", color=color, label=label)
    ax_rc.set(xlabel="layer", ylabel="Rc (axis not from 0)", title=titles[0])
    ax_nz.set(xlabel="layer", ylabel="non-zero fraction", title=titles[1])
    ax_nz.set_ylim(0, 1.02)
    for ax in (ax_rc, ax_nz):
        ax.set_xticks(layers)
        ax.grid(alpha=0.3)
    legend_beside(ax_nz)
    if len(shown) < len(history):
        fig.suptitle(f"{len(shown)} of the {len(history)} epochs, spread over the run",
                     fontsize=9)
    return save(fig, path)


def cls_attention_grid(attention, grid):
    """The class token's attention over the patches, as images.

    attention[b, k, 0, 1:] is how much the class token of image b reads each
    patch in head k; reshaped row by row onto the patch grid.
    Inputs: attention (B, K, N, N) with N = gh * gw + 1; grid (gh, gw).
    Returns: (B, K, gh, gw) NumPy array.
    """
    attention = to_numpy(attention)
    B, K, N, _ = attention.shape
    gh, gw = grid
    if N != gh * gw + 1:
        raise ValueError(f"attention has N={N} tokens, expected {gh}*{gw}+1 for grid {grid}")
    return attention[:, :, 0, 1:].reshape(B, K, gh, gw)     # (B, K, gh, gw)


def plot_attention(images, attention_by_layer, grid, path, labels=None, predictions=None):
    """Class-token attention maps: one row per image, one column per head and layer.

    Every map shares one colour scale (0 to the largest weight in the figure)
    shown by a colorbar, so maps can be compared across heads and layers.
    Inputs: images (B, C, H, W) in [0, 1] (CPU or GPU); attention_by_layer, a
    dict layer index -> attention (B, K, N, N) of that layer; grid, the patch
    grid (gh, gw); path of the PNG; optional labels and predictions (B,).
    Returns: path.
    """
    images = to_numpy(images)
    B, C = images.shape[:2]
    maps = {l: cls_attention_grid(a, grid) for l, a in attention_by_layer.items()}
    K = next(iter(maps.values())).shape[1]
    cols = 1 + K * len(maps)
    fig, axes = figure(B, cols, (1.3 * cols + 1.0, 1.4 * B + 0.6))
    H, W = images.shape[2:]
    vmax = max(float(m.max()) for m in maps.values())       # one scale for every map
    n = grid[0] * grid[1]
    fig.suptitle(f"Attention of the cls token over the {grid[0]} x {grid[1]} patches, "
                 f"per layer and head (uniform = 1/{n + 1:d})", fontsize=9)
    for b in range(B):
        shown = images[b].transpose(1, 2, 0)                 # (H, W, C)
        ax = axes[b, 0]
        if C == 1:
            ax.imshow(shown[..., 0], cmap="gray")
        else:
            ax.imshow(np.clip(shown, 0, 1))
        title = ""
        if labels is not None:
            title = f"label {int(labels[b])}"
        if predictions is not None:
            title += f"\npred {int(predictions[b])}"
        ax.set_title(title, fontsize=7)
        col = 1
        for l, m in maps.items():
            for k in range(K):
                ax = axes[b, col]
                # Stretch the coarse grid over the image so the two line up.
                shown_map = ax.imshow(m[b, k], cmap="inferno", extent=(0, W, H, 0),
                                      vmin=0.0, vmax=vmax)
                if b == 0:
                    ax.set_title(f"layer {l + 1}\nhead {k + 1}", fontsize=7)
                col += 1
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown_map, ax=axes[:, 1:], shrink=0.8, label="cls attention weight")
    return save(fig, path)
