"""Training tasks: each file holds one task's data, model, loss, metrics and figures.

``python -m whitebox.train --task NAME`` runs the shared loop
(:mod:`whitebox.training`) over the task named here. A task is a subclass of
:class:`whitebox.tasks.base.Task`; :mod:`whitebox.tasks.classify` is the one
to read first.
"""
import importlib

# name -> module holding a class ``TASK`` (imported only when asked for)
TASKS = {"classify": "whitebox.tasks.classify", "mae": "whitebox.tasks.mae",
         "lm": "whitebox.tasks.lm", "mlm": "whitebox.tasks.mlm"}


def available():
    """The task names whose module is present."""
    return [name for name, module in TASKS.items() if importlib.util.find_spec(module)]


def get_task(name):
    """The Task class of ``name``."""
    if name not in TASKS or importlib.util.find_spec(TASKS[name]) is None:
        raise ValueError(f"task must be one of {available()}, got {name!r}")
    return importlib.import_module(TASKS[name]).TASK
