"""What defines a training run: the shared settings, each task's own, and their checks.

Every setting is a dataclass field made with :func:`setting`, which carries
its help text and its check. The same check validates a config built in
Python and a flag typed on the command line (where the message names the
flag), so a bad number is refused before any work starts.

    TrainConfig     the settings every task shares (epochs, lr, out, ...),
                    plus ``options``: the task's own settings (a dict that
                    the task's ``Options`` dataclass validates)
    make_config     defaults -> task defaults -> --fast -> what was given
"""
import argparse
import dataclasses
import math

import numpy as np

from ..backend import BACKENDS
from ..threads import DEFAULT_THREADS


# ------------------------------------------------------------------ checks
class Check:
    """A check of one setting: ``check(name, value)`` returns the value or raises ValueError."""

    def __init__(self, kind, low=None, high=None, high_open=False, choices=None,
                 optional=False):
        self.kind, self.low, self.high, self.high_open = kind, low, high, high_open
        self.choices, self.optional = choices, optional

    def expected(self):
        if self.choices is not None:
            return f"one of {', '.join(map(str, self.choices))}"
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return "a path or name"
        what = "an integer" if self.kind is int else "a finite number"
        if self.high is not None:
            return f"{what} in [{self.low}, {self.high}{')' if self.high_open else ']'}"
        return what if self.low is None else f"{what} >= {self.low}"

    def __call__(self, name, value):
        if value is None and self.optional:
            return None
        ok = True
        if self.choices is not None:
            ok = value in self.choices
        elif self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind is str:
            ok = isinstance(value, str) and value != ""
        elif self.kind is int:
            ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float, np.integer, np.floating)) \
                and not isinstance(value, bool) and math.isfinite(value)
        if ok and self.low is not None:
            ok = value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.high_open else value <= self.high
        if not ok:
            raise ValueError(f"{name} must be {self.expected()}, got {value!r}")
        return int(value) if self.kind is int else value

    def parse(self, flag):
        """An argparse ``type``: text -> checked value; argparse names the flag in the error."""
        def convert(text):
            try:
                value = self.kind(text) if self.kind in (int, float) else text
                return self(flag, value)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"must be {self.expected()}, got {text!r}") from None
        convert.__name__ = self.kind.__name__ if self.choices is None else "choice"
        return convert


POSITIVE_INT = Check(int, low=1)
COUNT = Check(int, low=0)
NONNEG = Check(float, low=0)
POSITIVE = Check(float, low=1e-300)
OPTIONAL_POSITIVE = Check(float, low=1e-300, optional=True)
PROBABILITY = Check(float, low=0, high=1, high_open=True)


def setting(default, help, check, flag=True):
    """A dataclass field that carries its help text and its check (and a command-line flag)."""
    return dataclasses.field(default=default,
                             metadata={"help": help, "check": check, "flag": flag})


def check_settings(obj, prefix=""):
    """Run every field's check on a dataclass instance; returns it (values normalised)."""
    for f in dataclasses.fields(obj):
        check = f.metadata.get("check")
        if check is not None:
            setattr(obj, f.name, check(prefix + f.name, getattr(obj, f.name)))
    return obj


# ------------------------------------------------------------------ shared settings
@dataclasses.dataclass
class TrainConfig:
    """The settings every task shares; ``options`` holds the task's own (saved in config.json)."""
    task: str = setting("classify", "what to train", Check(str), flag=False)
    model: str = setting("crate", "model family", Check(str))
    epochs: int = setting(20, "passes over the training data", POSITIVE_INT)
    batch_size: int = setting(64, "samples per step", POSITIVE_INT)
    lr: float = setting(2e-3, "peak learning rate of AdamW", POSITIVE)
    weight_decay: float = setting(0.05, "AdamW weight decay", NONNEG)
    warmup_epochs: float = setting(1.0, "linear warm-up length, in epochs", NONNEG)
    min_lr: float = setting(1e-5, "learning rate at the end of the cosine", NONNEG)
    grad_clip: float = setting(1.0, "global gradient-norm clip (0: none)", NONNEG)
    seed: int = setting(0, "seed of the data order, initialisation and dropout", COUNT)
    backend: str = setting("numpy", "array backend", Check(str, choices=BACKENDS))
    threads: int = setting(DEFAULT_THREADS, "threads for NumPy: W > 1 splits each batch into W "
                           "shards run at once (training/threaded.py; BLAS threads instead "
                           "when the step draws dropout masks)", POSITIVE_INT)
    distributed: bool = setting(False, "data-parallel over MPI ranks (training/distributed.py)",
                                Check(bool), flag=False)
    out: str = setting(None, "output folder", Check(str, optional=True))
    resume: bool = setting(False, "continue exactly from <out>/checkpoint.npz", Check(bool),
                           flag=False)
    overwrite: bool = setting(False, "start over in a used --out, deleting its run", Check(bool),
                              flag=False)
    stop_after: int = setting(None, "stop after this epoch; continue later with --resume",
                              Check(int, low=1, optional=True))
    figures: bool = setting(True, "draw figures at the end", Check(bool), flag=False)
    progress: bool = setting(None, "progress bars (default: only when stderr is a terminal)",
                             Check(bool, optional=True), flag=False)
    options: dict = dataclasses.field(default_factory=dict)


# Settings that may change between an interrupted run and its resumption.
RUNTIME_FIELDS = ("backend", "threads", "distributed", "out", "resume", "overwrite", "stop_after", "figures",
                  "progress")


def split_settings(task, settings):
    """Separate shared settings from the task's own (unknown names are an error)."""
    shared = {f.name for f in dataclasses.fields(TrainConfig)} - {"options"}
    own = {f.name for f in dataclasses.fields(task.Options)}
    unknown = set(settings) - shared - own
    if unknown:
        raise ValueError(f"unknown setting(s) for task {task.name!r}: {sorted(unknown)}; "
                         f"shared: {sorted(shared)}; {task.name}: {sorted(own)}")
    return ({k: v for k, v in settings.items() if k in shared},
            {k: v for k, v in settings.items() if k in own})


def make_config(task, given=None, fast=False, base=None):
    """A checked TrainConfig: TrainConfig defaults -> task.defaults -> task.fast -> given.

    ``base`` (a saved config dict) replaces the defaults, for --resume.
    """
    if base is not None:
        settings = {k: v for k, v in base.items() if k not in ("options", "run_id")}
        settings.update(base.get("options", {}))
    else:
        settings = dict(task.defaults)
        if fast:
            settings.update(task.fast)
    settings.update(given or {})
    shared, own = split_settings(task, settings)
    cfg = TrainConfig(task=task.name, **{k: v for k, v in shared.items() if k != "task"})
    cfg.options = task.resolve(check_settings(task.Options(**own)))
    return validate(task, cfg)


def validate(task, cfg):
    """Check every shared setting and the task's own; the model must be one the task offers."""
    check_settings(cfg)
    if cfg.model not in task.models:
        raise ValueError(f"model must be one of {task.models} for task {task.name!r}, "
                         f"got {cfg.model!r}")
    if not isinstance(cfg.options, task.Options):
        cfg.options = task.resolve(check_settings(task.Options(**cfg.options)))
    if cfg.out is None:
        cfg.out = task.default_out(cfg.options)
    return cfg


def as_dict(cfg):
    """A JSON-ready dict of the config (options as a plain dict)."""
    d = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainConfig)}
    d["options"] = dataclasses.asdict(cfg.options) if dataclasses.is_dataclass(cfg.options) \
        else dict(cfg.options)
    return d
