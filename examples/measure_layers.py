"""Measure what each CRATE layer does: compression Rc and sparsity, trained vs untrained.

For every layer l it reports the two quantities the CRATE paper plots:
  - Rc of the MSSA input LN1(Z^l) on that layer's own subspaces U_k (the
    official measurement: unit-length head-token vectors, eps^2 = 0.01);
  - the non-zero fraction of the ISTA output Z^{l+1} (1 - sparsity),
for the given weights and for the same architecture at its random
initialisation, prints a table and saves ``layers_trained_vs_untrained.png``
(in the run folder, or in --out).

    # a whitebox training run (reads config.json and checkpoint.npz; held-out images)
    python examples/measure_layers.py --run runs/mnist

    # official CRATE weights (.safetensors or .npz; .pth needs PyTorch) on your own images:
    # an .npy of shape (n, 3, 224, 224), values in [0, 1] or uint8 in [0, 255]
    python examples/measure_layers.py --weights crate_small.pth --arch small --images imgs.npy

Nothing is downloaded: the weights and images are files you pass.
"""
import argparse
import os

import numpy as np

from whitebox import plots
from whitebox.data.loader import normalize
from whitebox.interop import read_state_dict
from whitebox.models import crate_base, crate_large, crate_small, crate_tiny
from whitebox.rate import layer_measures
from whitebox.train import load_run

FIGURE = "layers_trained_vs_untrained.png"   # the file the docstring promises
ARCHS = {"tiny": crate_tiny, "small": crate_small, "base": crate_base, "large": crate_large}
# the ImageNet statistics the official training normalises with
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def from_run(folder, count):
    """Model (trained and untrained) and normalised held-out images of a whitebox run."""
    _, task, trained = load_run(folder)
    _, _, untrained = load_run(folder, checkpoint=False)
    images = normalize(task.test_images[:count], task.mean, task.std)
    return trained, untrained, images


def from_weights(path, arch, images_path, count):
    """An official-layout model with the given weights, its untrained twin, and the images."""
    if images_path is None:
        raise ValueError("--weights needs --images: an .npy of shape (n, 3, H, W) "
                         "(nothing is downloaded)")
    state = read_state_dict(path)
    if "mlp_head.1.weight" not in state:
        raise KeyError(f"{path!r} has no 'mlp_head.1.weight': not a CRATE classifier state dict")
    num_classes = state["mlp_head.1.weight"].shape[0]
    trained, untrained = ARCHS[arch](num_classes), ARCHS[arch](num_classes, seed=1)
    trained.load_state_dict(state)
    images = np.load(images_path)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"--images must hold an array (n, 3, H, W), got shape {images.shape}")
    images = images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
    return trained, untrained, normalize(images[:count], IMAGENET_MEAN, IMAGENET_STD)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="folder of a whitebox training run")
    src.add_argument("--weights", help="official CRATE weights (.safetensors, .npz or .pth)")
    ap.add_argument("--arch", choices=sorted(ARCHS), default="small",
                    help="architecture of --weights (224 px, patch 16)")
    ap.add_argument("--images", help=".npy of images (n, 3, H, W), for --weights")
    ap.add_argument("--count", type=int, default=64, help="how many images to measure on")
    ap.add_argument("--batch", type=int, default=16, help="images per forward pass")
    ap.add_argument("--out", default=None, help=f"folder for {FIGURE} (default: the run "
                                                "folder, or outputs/measure)")
    args = ap.parse_args(argv)
    if args.run:
        trained, untrained, images = from_run(args.run, args.count)
    else:
        trained, untrained, images = from_weights(args.weights, args.arch, args.images,
                                                  args.count)
    rows = []
    for label, model in (("untrained", untrained), ("trained", trained)):
        # average the per-batch measures so large models fit in memory
        parts = [layer_measures(model, images[i:i + args.batch])
                 for i in range(0, len(images), args.batch)]
        weights = [len(images[i:i + args.batch]) for i in range(0, len(images), args.batch)]
        rc = np.average([p[0] for p in parts], axis=0, weights=weights)
        nonzero = np.average([p[1] for p in parts], axis=0, weights=weights)
        rows.append({"label": label, "rc": rc.tolist(), "nonzero": nonzero.tolist()})

    print(f"per-layer measures on {len(images)} images")
    print("| layer | Rc untrained | Rc trained | non-zero untrained | non-zero trained |")
    print("|---|---|---|---|---|")
    for l in range(len(rows[0]["rc"])):
        print(f"| {l + 1} | {rows[0]['rc'][l]:.1f} | {rows[1]['rc'][l]:.1f} | "
              f"{rows[0]['nonzero'][l]:.3f} | {rows[1]['nonzero'][l]:.3f} |")
    out = args.out or args.run or os.path.join("outputs", "measure")
    os.makedirs(out, exist_ok=True)
    path = plots.plot_layer_measures(rows, os.path.join(out, FIGURE))
    print(f"figure: {path}")
    return rows


if __name__ == "__main__":
    main()
