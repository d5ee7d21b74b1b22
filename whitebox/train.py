"""The training entry point: ``python -m whitebox.train [--task T] [--model M] [flags]``.

    --task classify   CRATE classifier on images (default; MNIST-5k ships with the package)
    --task mae        CRATE-MAE, masked autoencoding of images
    --task lm         causal (GPT-style) CRATE on text
    --task mlm        masked (BERT-style) CRATE on text
    --task ssl        self-supervised CRATE (SimDINO or DINO, --ssl-loss), judged by k-NN

From Python, the same job:

    from whitebox.train import run, load_run
    history = run("classify", epochs=5, dim=64, out="runs/small")
    cfg, task, model = load_run("runs/small")

This file holds the tasks by name (``TASKS``, ``get_task``), ``run`` and
``load_run``, and reads the command line: the shared loop is
:mod:`whitebox.training` and each task's data, loss, metrics and figures
live in :mod:`whitebox.tasks`. ``python -m whitebox.train --task T --help``
lists that task's flags with their defaults. Every number is checked when
it is parsed, and the data, the model and the run folder before the first
step: a run that cannot start ends with one line ``whitebox.train: error:
...`` and exit status 2 (``--debug`` shows the traceback instead). Ctrl-C
ends with where the run stopped and the checkpoint to resume from (exit
status 130).
"""
import argparse
import dataclasses
import importlib
import importlib.util
import os
import sys

import numpy as np

from . import backend
from .checkpoint import load_checkpoint
from .training import Interrupted, Training, distributed, train
from .training.config import TrainConfig, make_config
from .training.processes import ProcessesStopped
from .training.runs import CONFIG, RunFolder, read_json

PROG = "whitebox.train"
# name -> module holding a class ``TASK`` (imported only when asked for)
TASKS = {"classify": "whitebox.tasks.classify", "mae": "whitebox.tasks.mae",
         "lm": "whitebox.tasks.lm", "mlm": "whitebox.tasks.mlm", "ssl": "whitebox.tasks.ssl"}
# Errors of a run that cannot start: its settings, its data, its run folder, a missing extra.
REFUSALS = (ValueError, OSError, ImportError)


def available():
    """The task names whose module is present."""
    return [name for name, module in TASKS.items() if importlib.util.find_spec(module)]


def get_task(name):
    """The Task class of ``name``."""
    if name not in TASKS or importlib.util.find_spec(TASKS[name]) is None:
        raise ValueError(f"task must be one of {available()}, got {name!r}")
    return importlib.import_module(TASKS[name]).TASK


def run(task="classify", fast=False, **settings):
    """Train ``task`` (a name in TASKS) with the given settings; returns the per-epoch metrics."""
    task_cls = get_task(task)
    return train(task_cls, make_config(task_cls, settings, fast=fast))


def load_run(out, checkpoint=True):
    """The task (data loaded) and model of the run in ``out``, as its checkpoint left it.

    Returns: (cfg, task, model). With checkpoint=False the model keeps its
    initialisation (the untrained twin of the run's model).
    """
    folder = RunFolder(out)
    for path in (folder.config,) + ((folder.checkpoint,) if checkpoint else ()):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{out!r} has no {os.path.basename(path)}: train there "
                                    "first (python -m whitebox.train --out FOLDER)")
    saved = read_json(folder.config)
    task_cls = get_task(saved.get("task", "classify"))
    cfg = make_config(task_cls, dict(out=out, backend=saved.get("backend", "numpy")),
                      base=saved)
    task = task_cls(cfg)
    task.setup(np.random.default_rng(cfg.seed))
    model = task.build_model().to(cfg.backend)
    if checkpoint:
        load_checkpoint(folder.checkpoint, model)
    return cfg, task, model


# ---------------------------------------------------------------------- the command line
class _Parser(argparse.ArgumentParser):
    """argparse, with its error line in the form this job's own refusals take."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(2, f"{PROG}: error: {message}\n")


def _first_pass(argv):
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--task", default=None)
    p.add_argument("--fast", action="store_true")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--debug", action="store_true")
    return p.parse_known_args(argv)[0]


def build_parser(task, fast=False):
    """The parser of one task: shared flags, then the task's own, each with its default."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    defaults.update({f.name: f.default for f in dataclasses.fields(task.Options)})
    defaults.update(task.defaults)
    if fast:
        defaults.update(task.fast)
    p = _Parser(
        prog="python -m whitebox.train",
        description=f"Train with the shared whitebox loop. This is --task {task.name}: "
                    f"{task.description}. Other tasks: {', '.join(available())} "
                    "(each has its own flags: --task NAME --help).")
    p.add_argument("--task", choices=list(TASKS), default=argparse.SUPPRESS,
                   help="what to train (default: classify; with --resume, the run's own)")

    def add(group, field):
        meta = field.metadata
        if not meta.get("flag", True) or field.name == "task":
            return
        default = defaults[field.name]
        check = meta["check"]
        shown = "" if default is None else f" (default: {default})"
        if field.name == "out" and default is None:
            shown = f" (default: {make_config(task, fast=fast).out} and the like, one per " \
                    "dataset and model)"
        kwargs = dict(help=meta["help"] + shown, default=argparse.SUPPRESS,
                      metavar=field.name.upper() if check.choices is None else None)
        choices = task.models if field.name == "model" else check.choices
        if choices is not None:
            kwargs.update(choices=choices, metavar=None)
        else:
            kwargs["type"] = check.parse("--" + field.name.replace("_", "-"))
        group.add_argument("--" + field.name.replace("_", "-"), **kwargs)

    shared = p.add_argument_group("training (every task)")
    for f in dataclasses.fields(TrainConfig):
        if f.name != "options":
            add(shared, f)
    own = p.add_argument_group(f"--task {task.name}")
    for f in dataclasses.fields(task.Options):
        add(own, f)
    run_flags = p.add_argument_group("the run")
    run_flags.add_argument("--resume", action="store_true",
                           help="continue exactly from <out>/checkpoint.npz, with the saved "
                                "settings and task")
    run_flags.add_argument("--overwrite", action="store_true",
                           help="start over in a used --out, deleting its earlier run (without "
                                "it, the earlier run is moved to <out>/earlier/)")
    run_flags.add_argument("--fast", action="store_true",
                           help="a tiny quick run (few hundred samples, 2 epochs, small model)")
    run_flags.add_argument("--no-figures", action="store_true", help="draw no figures")
    run_flags.add_argument("--distributed", action="store_true",
                           help="data-parallel over MPI: mpirun -n 2 python -m whitebox.train "
                                "--distributed (needs mpi4py)")
    run_flags.add_argument("--debug", action="store_true",
                           help="show the traceback of an error that stops the run")
    aside = run_flags.add_mutually_exclusive_group()
    aside.add_argument("--eval-thread", dest="eval_thread", action="store_true", default=None,
                       help="evaluate each epoch in a second thread while the next one trains "
                            "(default: when the run's threads leave a core free and the task "
                            "allows it)")
    aside.add_argument("--no-eval-thread", dest="eval_thread", action="store_false",
                       help="evaluate each epoch before the next one starts")
    bars = run_flags.add_mutually_exclusive_group()
    bars.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="progress bars even when stderr is not a terminal")
    bars.add_argument("--no-progress", dest="progress", action="store_false",
                      help="no progress bars (default: bars only on a terminal)")
    return p


def _saved_config(out):
    path = os.path.join(out, CONFIG)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"--resume: {path!r} is missing" + ("" if os.path.isdir(out) else
                                                 f" (no folder {out!r})")
            + ", so there is no run to continue there (start a new run without --resume, or "
            "pick the --out of the run to continue)")
    return read_json(path)


def config_from_args(argv=None):
    """A checked TrainConfig from the command line.

    Defaults, then the task's, then --fast, then the flags given. With
    --resume the saved config.json of --out is the starting point (its task
    included), so ``--resume`` alone continues the run with its own settings.
    """
    first = _first_pass(argv)
    task = get_task(first.task or "classify")
    parser = build_parser(task, first.fast)
    args = vars(parser.parse_args(argv))
    flags = {"resume", "overwrite", "fast", "no_figures", "progress", "task", "distributed",
             "debug", "eval_thread"}
    given = {k: v for k, v in args.items() if k not in flags}
    runtime = dict(resume=args["resume"], overwrite=args["overwrite"],
                   distributed=args["distributed"],
                   figures=not args["no_figures"], progress=args["progress"],
                   eval_thread=args["eval_thread"])
    if not args["resume"]:
        return make_config(task, dict(given, **runtime), fast=first.fast)
    out = given.get("out") or make_config(task, given, fast=first.fast).out
    saved = _saved_config(out)
    saved_task = saved.get("task", "classify")
    if first.task is not None and first.task != saved_task:
        raise ValueError(f"--resume: the run in {out!r} trained --task {saved_task}, not "
                         f"--task {first.task} (leave out --task to continue it, or pick "
                         "another --out)")
    if saved_task != task.name:          # the run's own task: its flags, its parser
        task = get_task(saved_task)
        given = {k: v for k, v in vars(build_parser(task).parse_args(argv)).items()
                 if k not in flags}
    saved.pop("stop_after", None)         # where the interrupted run stopped, not this one
    return make_config(task, dict(given, out=out, **runtime), base=saved)


def _refuse(message):
    sys.stderr.write(f"{PROG}: error: {message}\n")
    sys.exit(2)


def main(argv=None):
    """Command line entry point: train, then print the task's last line."""
    debug = _first_pass(argv).debug
    try:
        cfg = config_from_args(argv)
        if cfg.backend == "cupy" and not backend.gpu_available():
            raise ValueError("--backend cupy needs CuPy and a CUDA device: " + (
                "CuPy is not installed (pip install 'whitebox-crate[gpu]')"
                if not backend.cupy_installed() else "no CUDA device answers"))
        training = Training(get_task(cfg.task), cfg)
    except REFUSALS as err:
        if debug:
            raise
        _refuse(str(err))
    except KeyboardInterrupt:
        if debug:
            raise
        sys.stderr.write("interrupted before the first step\n")
        sys.exit(130)
    try:
        history = training.run()
    except Interrupted as stop:
        if debug:
            raise
        sys.stderr.write(f"{stop}; continue with --resume\n" if stop.checkpoint else
                         f"{stop}; start again without --resume\n")
        sys.exit(130)
    except ProcessesStopped as stop:                # --processes: another copy ended early
        if debug:
            raise
        sys.stderr.write(f"{PROG}: error: {stop}; " + ("continue with --resume\n"
                         if training.saved_epoch else "start again without --resume\n"))
        sys.exit(1)
    if distributed.is_writer(cfg):                  # the last lines, not one per rank
        print(training.task.summary(history, training.model))
        last = history[-1]["epoch"] if history else 0
        if last < cfg.epochs:
            print(f"stopped after epoch {last} of {cfg.epochs}; continue with --resume")
    return history


if __name__ == "__main__":
    main(sys.argv[1:])
