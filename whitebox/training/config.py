"""What defines a training run: the shared settings and each task's own.

Every setting is a dataclass field made with :func:`whitebox.settings.setting`,
which carries its help text and its check, so a config built in Python and
a flag typed on the command line are refused by the same check.

    TrainConfig     the settings every task shares (epochs, lr, out, ...),
                    plus ``options``: the task's own settings (a dict that
                    the task's ``Options`` dataclass validates)
    make_config     defaults -> task defaults -> --fast -> what was given
"""
import dataclasses

from ..backend import BACKENDS
from ..settings import COUNT, NONNEG, POSITIVE, POSITIVE_INT, Check, check_settings, setting
from ..threads import DEFAULT_THREADS


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
                           "when the task's loss couples the rows of a batch)", POSITIVE_INT)
    processes: int = setting(1, "processes on this machine: N > 1 starts N - 1 more, each "
                             "training a copy of the model on 1/N of every batch, gradients "
                             "averaged every step (training/processes.py; no MPI needed)",
                             POSITIVE_INT)
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
    eval_thread: bool = setting(None, "evaluate each epoch in a second thread while the next one "
                                "trains (default: on NumPy in one process, when the task "
                                "allows it and the run's threads leave a core free)",
                                Check(bool, optional=True), flag=False)
    options: dict = dataclasses.field(default_factory=dict)


# Settings that may change between an interrupted run and its resumption.
RUNTIME_FIELDS = ("backend", "threads", "processes", "distributed", "out", "resume", "overwrite",
                  "stop_after", "figures", "progress", "eval_thread")


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
        settings = {task.renamed.get(k, k): v for k, v in settings.items()}
        for k, v in task.introduced.items():      # a run saved before the setting existed
            settings.setdefault(k, v)
    else:
        settings = dict(task.defaults)
        if fast:
            settings.update(task.fast_settings((given or {}).get("dataset")))
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
    if cfg.processes > 1 and cfg.distributed:
        raise ValueError(f"--processes {cfg.processes} and --distributed both split every "
                         "batch over processes: use one of them")
    if cfg.processes > 1 and cfg.backend != "numpy":
        raise ValueError(f"--processes {cfg.processes} trains copies on the CPU cores: use it "
                         f"with --backend numpy, got --backend {cfg.backend}")
    if cfg.eval_thread:
        if cfg.backend != "numpy":
            raise ValueError(f"--eval-thread runs on NumPy, got --backend {cfg.backend}")
        if cfg.processes > 1 or cfg.distributed:
            raise ValueError("--eval-thread with a run split over processes: their evaluation "
                             "is shared between them at every epoch's end; leave it out")
        if not task.evaluate_is_pure:
            raise ValueError(f"--eval-thread: --task {task.name} cannot evaluate in a second "
                             "thread (its evaluation keeps state of its own); leave it out")
    if cfg.out is None:         # a folder per task and model: runs/mnist, runs/mnist-crate-alpha
        cfg.out = task.default_out(cfg.options) + \
            ("" if cfg.model == task.models[0] else f"-{cfg.model}")
    return cfg


def as_dict(cfg):
    """A JSON-ready dict of the config (options as a plain dict)."""
    d = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainConfig)}
    d["options"] = dataclasses.asdict(cfg.options) if dataclasses.is_dataclass(cfg.options) \
        else dict(cfg.options)
    return d
