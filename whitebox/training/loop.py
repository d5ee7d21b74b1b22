"""The one training loop every task shares.

``train(cfg)`` runs (or resumes) the task named by ``cfg.task``:

  1. ``--resume`` reads config.json and refuses files of another run (see
     runs.py);
  2. the task loads and checks its data once, on the host, and builds the
     model; only then does a fresh run move an earlier run in the folder
     aside, so settings that fail here lose nothing; AdamW with a warm-up +
     cosine schedule;
  3. per epoch: the task's batches, each a zero_grad / forward + loss +
     backward (the task's ``train_step``; with ``--threads W`` on NumPy, on
     W shards of the batch in W threads, see threaded.py) / clip / step; then the task's
     held-out metrics; metrics.jsonl and checkpoint.npz rewritten atomically;
  4. at the end the task draws its figures.

``--resume`` continues exactly: the model, the optimizer's moments, the
schedule and the states of every generator (data order, dropout, masks)
come back from the checkpoint, so the following losses are the ones an
uninterrupted run would have produced.

On a GPU a step never waits for the device: the loss stays a 0-d array and
is turned into a Python number only when the progress bar shows it (every
``LOG_EVERY`` steps) and at the end of the epoch.
"""
import os
import sys
import time

import numpy as np
from tqdm.auto import tqdm

from ..checkpoint import load_checkpoint, save_checkpoint
from ..functional import fused
from ..memory import keep_freed_memory
from ..optim import AdamW, WarmupCosine, clip_grad_norm
from ..tasks import get_task
from ..threads import set_threads
from . import distributed, threaded
from .config import RUNTIME_FIELDS, as_dict, make_config, validate
from .runs import RunFolder, read_json

LOG_EVERY = 10        # steps between progress-bar updates (each one reads the loss)
# The wall-clock fields of an epoch's record: its training steps' mean, the
# whole epoch with its evaluation, and the run's total so far. Every other
# field is a number two equal runs (or a run and its resumption) agree on.
TIME_KEYS = ("step_seconds", "seconds", "elapsed")


def train(cfg):
    """Run (or resume) training as described in the module docstring.

    Input: cfg, a TrainConfig (see whitebox.training.config). Returns: the
    list of per-epoch metric dicts (all epochs so far, including those
    before a resume). The task object is kept as ``train.last_task``.
    """
    task_cls = get_task(cfg.task)
    cfg = validate(task_cls, cfg)
    set_threads(cfg.threads)                     # for the rest of the process
    if cfg.backend == "numpy":
        keep_freed_memory()                      # each step reuses the last one's blocks
    dp, run = distributed.setup(cfg)             # dp None unless --distributed
    writer = dp is None or dp.writer             # only rank 0 prints and writes files
    if cfg.resume:
        saved = run.open_for_resume()
        _check_resumable(task_cls, cfg, saved)

    task = task_cls(cfg)
    rng = np.random.default_rng(cfg.seed)        # data order and augmentation: checkpointed
    task.setup(rng)
    model = task.build_model().to(cfg.backend)
    if not cfg.resume:
        # only now that the data and the model are known to work: an earlier run in
        # the folder is moved aside (or deleted) by a run that can start
        run.start_fresh(cfg.overwrite)
    optimizer = AdamW(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = task.steps_per_epoch()
    total_steps = cfg.epochs * steps_per_epoch
    warmup = min(total_steps, int(round(cfg.warmup_epochs * steps_per_epoch)))
    schedule = WarmupCosine(optimizer, warmup, total_steps, min_lr=min(cfg.min_lr, cfg.lr))
    generators = {"data": rng, **model.generators(), **task.generators()}

    step, start_epoch, history, elapsed = 0, 0, [], 0.0
    if cfg.resume:
        state = load_checkpoint(run.checkpoint, model, optimizer, rng=generators,
                                scheduler=schedule)
        extra = state["extra"] or {}
        run.check_checkpoint_run(extra.get("run_id"))
        task.check_state(extra.get("task"))
        step, start_epoch = state["step"], state["epoch"]
        history = run.read_metrics(start_epoch)
        elapsed = history[-1]["elapsed"] if history else 0.0
    run.write_metrics(history)
    run.write_config(as_dict(cfg))

    shards = None
    if threaded.plan(cfg, task, model) == "shards":
        set_threads(1)                           # one BLAS thread inside each shard's thread
        shards = threaded.ShardThreads(model, cfg.threads)

    progress = sys.stderr.isatty() if cfg.progress is None else cfg.progress
    say = tqdm.write if writer else (lambda line: None)   # prints above any progress bar
    say(f"{task.name}: {type(model).__name__} {model.num_params():,} parameters | "
        f"{task.describe()} | {cfg.epochs} epochs of {steps_per_epoch} steps"
        + (f" | {cfg.threads} threads, each batch split in {cfg.threads}" if shards else
           f" | {cfg.threads} BLAS threads (the step draws dropout masks, so it is not split)"
           if cfg.threads > 1 and cfg.backend == "numpy" else "")
        + (" | fused loops (Numba)" if fused.enabled() and cfg.backend == "numpy" else "")
        + (f" | resuming after epoch {start_epoch}" if cfg.resume else ""))

    last_epoch = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, cfg.stop_after)
    for epoch in range(start_epoch + 1, last_epoch + 1):
        tic = time.perf_counter()
        model.train()
        totals = {}
        bar = tqdm(task.batches(), total=steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}",
                   leave=False, disable=not progress, file=sys.stderr)
        for i, batch in enumerate(bar):
            batch = task.draw(model, batch)          # draws for the whole batch, before any split
            if dp:
                batch = dp.shard(batch)
            model.zero_grad()
            if shards:
                loss, sums = shards.step(task.train_step, batch)
            else:
                loss, sums = task.train_step(model, batch)
            if dp:
                sums = dp.allreduce(model, sums)     # gradients of the whole global batch
            if cfg.grad_clip:
                clip_grad_norm(model, cfg.grad_clip)
            optimizer.step()
            schedule.step()
            step += 1
            for k, v in sums.items():
                totals[k] = totals[k] + v if k in totals else v
            if progress and (i % LOG_EVERY == 0 or i == steps_per_epoch - 1):
                bar.set_postfix(loss=f"{float(loss):.3f}")
        count = float(totals.pop("count"))
        record = dict(epoch=epoch, step=step,
                      **{f"train_{k}": float(v) / count for k, v in totals.items()})
        step_seconds = (time.perf_counter() - tic) / steps_per_epoch  # the sums above waited
        record.update(task.evaluate(model))
        seconds = time.perf_counter() - tic
        elapsed += seconds
        record.update(lr=float(optimizer.lr), seconds=seconds, elapsed=elapsed,
                      step_seconds=step_seconds)
        history.append(record)
        say(task.epoch_line(record) + f" | {seconds:.1f}s")
        # Metrics first, then the checkpoint: after a crash in between, resume
        # drops the metric line of the epoch the checkpoint does not hold.
        run.write_metrics(history)
        if writer:
            save_checkpoint(run.checkpoint, model, optimizer, step=step, epoch=epoch,
                            rng=generators, scheduler=schedule,
                            extra={"config": as_dict(cfg), "run_id": run.run_id,
                                   "task": task.state()})

    if shards:
        shards.close()
    if cfg.figures and history and writer:
        task.figures(model, history, cfg.out)
    train.last_task = task
    return history


def _check_resumable(task_cls, cfg, saved):
    """A resumed run must be the run that was saved, up to the runtime settings."""
    if saved.get("task", "classify") != cfg.task:
        raise ValueError(f"--resume: the run in {cfg.out!r} trained task {saved.get('task')!r}, "
                         f"not {cfg.task!r}")
    before = make_config(task_cls, base=saved)
    now, then = as_dict(cfg), as_dict(before)
    changed = {k: (then[k], now[k]) for k in now
               if k not in RUNTIME_FIELDS and k != "options" and then[k] != now[k]}
    changed.update({k: (then["options"].get(k), v) for k, v in now["options"].items()
                    if k not in task_cls.runtime_options and then["options"].get(k) != v})
    if changed:
        detail = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in changed.items())
        raise ValueError(f"--resume: the settings differ from the checkpointed run ({detail}); "
                         "resume with the same settings or start a new --out")


def load_run(out, checkpoint=True):
    """The task (data loaded) and model of the run in ``out``, as its checkpoint left it.

    Returns: (cfg, task, model). With checkpoint=False the model keeps its
    initialisation (the untrained twin of the run's model).
    """
    run = RunFolder(out)
    for path in (run.config,) + ((run.checkpoint,) if checkpoint else ()):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{out!r} has no {os.path.basename(path)}: train there "
                                    "first (python -m whitebox.train --out FOLDER)")
    saved = read_json(run.config)
    task_cls = get_task(saved.get("task", "classify"))
    cfg = make_config(task_cls, dict(out=out, backend=saved.get("backend", "numpy")),
                      base=saved)
    task = task_cls(cfg)
    task.setup(np.random.default_rng(cfg.seed))
    model = task.build_model().to(cfg.backend)
    if checkpoint:
        load_checkpoint(run.checkpoint, model)
    return cfg, task, model

