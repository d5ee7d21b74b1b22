"""One training loop for every task (classify, mae, lm, mlm, ssl).

Given a task class (a Task subclass: one of whitebox.tasks or your own),

    history = train(task, make_config(task, dict(epochs=5, dim=64)))

``make_config(task, settings, fast=False)`` builds a checked config from the
task's defaults and the given settings (shared ones such as ``epochs`` or
``lr``, and the task's own such as ``dim`` or ``dataset``);
``train(task, cfg)`` trains it. The tasks by name, ``run("classify", ...)``
and ``load_run(out)`` live at the entry point, :mod:`whitebox.train`; this
package imports no task.

Data parallelism: ``threads=W`` (``--threads W``) splits each NumPy batch
into W shards run at once by W threads (threaded.py); ``--distributed``
shares each batch among MPI ranks (distributed.py). Both weight each
shard's gradient by its share of the batch's count.
"""
from .config import TrainConfig, make_config
from .loop import Interrupted, Training, train
from .runs import RunFolder

__all__ = ["TrainConfig", "make_config", "train", "Training", "Interrupted", "RunFolder"]
