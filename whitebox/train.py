"""The training entry point: ``python -m whitebox.train [--task T] [--model M] [flags]``.

    --task classify   CRATE classifier on images (default; MNIST-5k ships with the package)
    --task mae        CRATE-MAE, masked autoencoding of images
    --task lm         causal (GPT-style) CRATE on text
    --task mlm        masked (BERT-style) CRATE on text

This file only reads the command line: the shared loop is
:mod:`whitebox.training` and each task's data, loss, metrics and figures
live in :mod:`whitebox.tasks`. ``python -m whitebox.train --task T --help``
lists that task's flags with their defaults. Every number is checked when
it is parsed, so a bad flag stops the job before any work, naming the flag.
"""
import argparse
import dataclasses
import os
import sys

from .tasks import TASKS, available, get_task
from .training import train
from .training import distributed
from .training.config import TrainConfig, make_config
from .training.runs import CONFIG, read_json


def _first_pass(argv):
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--task", default="classify")
    p.add_argument("--fast", action="store_true")
    return p.parse_known_args(argv)[0]


def build_parser(task, fast=False):
    """The parser of one task: shared flags, then the task's own, each with its default."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    defaults.update({f.name: f.default for f in dataclasses.fields(task.Options)})
    defaults.update(task.defaults)
    if fast:
        defaults.update(task.fast)
    p = argparse.ArgumentParser(
        prog="python -m whitebox.train",
        description=f"Train with the shared whitebox loop. This is --task {task.name}: "
                    f"{task.description}. Other tasks: {', '.join(available())} "
                    "(each has its own flags: --task NAME --help).")
    p.add_argument("--task", choices=list(TASKS), default="classify",
                   help="what to train (default: classify)")

    def add(group, field):
        meta = field.metadata
        if not meta.get("flag", True) or field.name == "task":
            return
        default = defaults[field.name]
        check = meta["check"]
        shown = "" if default is None else f" (default: {default})"
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
    run = p.add_argument_group("the run")
    run.add_argument("--resume", action="store_true",
                     help="continue exactly from <out>/checkpoint.npz, with the saved settings")
    run.add_argument("--overwrite", action="store_true",
                     help="start over in a used --out, deleting its earlier run (without it, "
                          "the earlier run is moved to <out>/earlier/)")
    run.add_argument("--fast", action="store_true",
                     help="a tiny quick run (few hundred samples, 2 epochs, small model)")
    run.add_argument("--no-figures", action="store_true", help="draw no figures")
    run.add_argument("--distributed", action="store_true",
                     help="data-parallel over MPI: mpirun -n 2 python -m whitebox.train "
                          "--distributed (needs mpi4py)")
    bars = run.add_mutually_exclusive_group()
    bars.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="progress bars even when stderr is not a terminal")
    bars.add_argument("--no-progress", dest="progress", action="store_false",
                      help="no progress bars (default: bars only on a terminal)")
    return p


def config_from_args(argv=None):
    """A checked TrainConfig from the command line.

    Defaults, then the task's, then --fast, then the flags given. With
    --resume the saved config.json of --out is the starting point, so
    ``--resume`` alone continues the run with its own settings.
    """
    first = _first_pass(argv)
    task = get_task(first.task)
    args = vars(build_parser(task, first.fast).parse_args(argv))
    flags = {"resume", "overwrite", "fast", "no_figures", "progress", "task", "distributed"}
    given = {k: v for k, v in args.items() if k not in flags}
    runtime = dict(resume=args["resume"], overwrite=args["overwrite"],
                   distributed=args["distributed"],
                   figures=not args["no_figures"], progress=args["progress"])
    if args["resume"]:
        out = given.get("out") or make_config(task, given, fast=first.fast).out
        path = os.path.join(out, CONFIG)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"--resume: {path!r} is missing, so the run's settings are unknown (start a "
                "new run without --resume, or pick the --out of the run to continue)")
        saved = read_json(path)
        saved.pop("stop_after", None)     # where the interrupted run stopped, not this one
        return make_config(task, dict(given, out=out, **runtime), base=saved)
    return make_config(task, dict(given, **runtime), fast=first.fast)


def main(argv=None):
    """Command line entry point: train, then print the task's last line."""
    cfg = config_from_args(argv)
    history = train(cfg)
    if distributed.is_writer(cfg):                  # one last line, not one per rank
        print(train.last_task.summary(history))
    return history


if __name__ == "__main__":
    main(sys.argv[1:])
