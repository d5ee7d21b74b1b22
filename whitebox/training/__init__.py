"""One training loop for every task (classify, mae, lm, mlm).

    from whitebox.training import run
    history = run("classify", epochs=5, dim=64, out="runs/small")

``run(task, fast=False, **settings)`` builds a checked config from the
task's defaults and the given settings (shared ones such as ``epochs`` or
``lr``, and the task's own such as ``dim`` or ``dataset``) and trains;
``train(cfg)`` trains a :class:`TrainConfig` you built yourself.

Data parallelism: ``threads=W`` (``--threads W``) splits each NumPy batch
into W shards run at once by W threads (threaded.py); ``--distributed``
shares each batch among MPI ranks (distributed.py). Both weight each
shard's gradient by its share of the batch's count.
"""
from ..tasks import get_task
from .config import TrainConfig, make_config
from .loop import load_run, train
from .runs import RunFolder


def run(task="classify", fast=False, **settings):
    """Train ``task`` with the given settings; returns the per-epoch metric dicts."""
    return train(make_config(get_task(task), settings, fast=fast))


__all__ = ["TrainConfig", "make_config", "train", "run", "load_run", "RunFolder"]
