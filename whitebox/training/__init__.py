"""One training loop for every task (classify, mae, lm, mlm).

    from whitebox.tasks.classify import Classify
    from whitebox.training import make_config, train
    history = train(Classify, make_config(Classify, dict(epochs=5, dim=64)))

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
