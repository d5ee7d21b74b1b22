"""Emergent segmentation of a trained run: ``python -m whitebox.segment RUN_DIR``.

Loads the run (its checkpoint, or its initialisation with --untrained), takes the task's
held-out images, and measures the last layer's class-token attention against the digits'
own pixels (whitebox.segmentation). Prints the mIoU of each head and the best head per
class; writes ``segmentation.json``, ``segmentation.png`` (attention beside the truth,
two models side by side when a second run is given) and ``segmentation_pca.png``.
"""
import argparse
import json
import os
import sys

import numpy as np

from . import segmentation as S

PROG = "whitebox.segment"


def build_parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("run", metavar="RUN_DIR", help="a folder written by python -m whitebox.train")
    p.add_argument("other", metavar="RUN_DIR2", nargs="?", default=None,
                   help="a second run, measured the same way and drawn beside the first")
    p.add_argument("--out", default=None, help="folder for the outputs (default: RUN_DIR)")
    p.add_argument("--threshold", type=float, default=S.MASS,
                   help=f"share of each head's attention mass its mask keeps (default {S.MASS})")
    p.add_argument("--pixel-threshold", type=float, default=S.PIXEL_THRESHOLD,
                   help="a pixel in [0, 1] is foreground above this intensity "
                        f"(default {S.PIXEL_THRESHOLD})")
    p.add_argument("--patch-fraction", type=float, default=S.PATCH_FRACTION,
                   help="a patch is foreground when at least this share of its pixels is "
                        f"(default {S.PATCH_FRACTION})")
    p.add_argument("--pca-threshold", type=float, default=S.PCA_THRESHOLD,
                   help="the standardised first principal component above this is foreground "
                        f"(default {S.PCA_THRESHOLD})")
    p.add_argument("--untrained", action="store_true",
                   help="measure the run's model at its initialisation (no checkpoint)")
    p.add_argument("--n", type=int, default=None, help="use at most this many held-out images")
    return p


def measure_run(run_dir, untrained=False, mass=S.MASS, pixel_threshold=S.PIXEL_THRESHOLD,
                patch_fraction=S.PATCH_FRACTION, n=None):
    """(model, raw held-out images, the images as the model reads them, segmentation_scores
    of the run's model on them)."""
    from .train import load_run
    _, task, model = load_run(run_dir, checkpoint=not untrained)
    if not hasattr(task, "test_images") or not hasattr(model, "attention_maps"):
        raise ValueError(f"{run_dir!r} is not an image classification run (its task "
                         f"{type(task).__name__} has no held-out images with a cls attention)")
    raw, labels = task.test_images, task.test_labels
    if n is not None:
        raw, labels = raw[:n], labels[:n]
    scores = S.digit_scores(model, raw, labels, task.mean, task.std, mass, pixel_threshold,
                            patch_fraction, num_classes=10)
    return model, raw, S.normalise(raw, task.mean, task.std), scores


def _summary(name, scores):
    return {"model": name, "miou": scores["miou"],
            "per_head_miou": [None if np.isnan(v) else float(v) for v in scores["per_head"]],
            "best_heads": [int(k) for k in scores["best_heads"]],
            "best_iou": [None if np.isnan(v) else float(v) for v in scores["best_iou"]],
            "iou": [[None if np.isnan(v) else float(v) for v in row] for row in scores["iou"]],
            "images": int(len(scores["truth"])),
            "foreground_share": float(scores["truth"].mean())}


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        for name in ("threshold", "patch_fraction"):
            S.check_fraction(f"--{name.replace('_', '-')}", getattr(args, name))
        if args.n is not None and args.n < 1:
            raise ValueError(f"--n must be a positive number of images, got {args.n}")
        out = args.out or args.run
        os.makedirs(out, exist_ok=True)
        runs = [args.run] + ([args.other] if args.other else [])
        measured = [measure_run(r, args.untrained, args.threshold, args.pixel_threshold,
                                args.patch_fraction, args.n) for r in runs]
    except (ValueError, OSError, TypeError) as err:
        sys.exit(f"{PROG}: error: {err}")
    names = [os.path.basename(os.path.normpath(r)) + (" (untrained)" if args.untrained else "")
             for r in runs]
    report = {"settings": {"mass": args.threshold, "pixel_threshold": args.pixel_threshold,
                           "patch_fraction": args.patch_fraction,
                           "pca_threshold": args.pca_threshold,
                           "untrained": args.untrained},
              "segmentation": []}
    for name, (model, raw, _, scores) in zip(names, measured):
        summary = _summary(name, scores)
        summary["chance_miou"] = S.chance_miou(scores["truth"], scores["labels"],
                                               scores["attention"].shape[1], 10, args.threshold)
        report["segmentation"].append(summary)
        print(f"{name}: mIoU {scores['miou']:.3f} over {summary['images']} held-out images "
              f"(foreground {summary['foreground_share']:.0%} of patches; random attention "
              f"with as many heads: {summary['chance_miou']:.3f})")
        for k, v in enumerate(scores["per_head"]):
            print(f"  head {k}: mIoU {v:.3f}")
        print("  best head per class: " + ", ".join(
            f"{c}:{k} ({v:.2f})" for c, (k, v) in enumerate(zip(scores["best_heads"],
                                                                  scores["best_iou"]))
            if k >= 0))
    model, raw, inputs, m = measured[0]
    grid = S.patch_grid(model)
    S.plot_attention_masks(raw, [r[3] for r in measured], grid,
                           os.path.join(out, "segmentation.png"), names)
    features = S.patch_features(model, inputs)
    rgb, foreground, _ = S.pca_view(features, grid, args.pca_threshold)
    report["pca"] = {"threshold": args.pca_threshold,
                     "foreground_share": float(foreground.mean()),
                     "iou_with_truth": float((foreground.reshape(len(raw), -1) & m["truth"]).sum()
                                             / max(1, (foreground.reshape(len(raw), -1)
                                                       | m["truth"]).sum()))}
    S.plot_pca(raw, rgb, os.path.join(out, "segmentation_pca.png"),
               threshold=args.pca_threshold)
    with open(os.path.join(out, "segmentation.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {os.path.join(out, 'segmentation.json')}, segmentation.png, "
          "segmentation_pca.png")
    return report


if __name__ == "__main__":
    main()
