"""Training tasks: each file holds one task's data, model, loss, metrics and figures.

``python -m whitebox.train --task NAME`` runs the shared loop
(:mod:`whitebox.training`) over a task; :mod:`whitebox.train` names them.
A task is a subclass of :class:`whitebox.tasks.base.Task`;
:mod:`whitebox.tasks.classify` is the one to read first.
"""
