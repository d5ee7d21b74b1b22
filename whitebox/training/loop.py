"""The one training loop every task shares.

``train(task, cfg)`` runs (or resumes) a run of ``task`` (a Task subclass,
see whitebox/tasks/base.py) with the settings ``cfg`` (a TrainConfig):

  1. ``Training(task, cfg)`` prepares the run, so every refusal comes before
     any step: the settings are checked, ``--resume`` reads config.json and
     refuses files of another run (see runs.py), the task loads and checks
     its data once, on the host, and builds the model; only then does a
     fresh run move an earlier run in the folder aside, so settings that
     fail here lose nothing. AdamW with a warm-up + cosine schedule.
  2. ``Training.run()`` trains. Per epoch: the task's batches, each a
     zero_grad / forward + loss + backward (the task's ``train_step``; with
     ``--threads W`` on NumPy, on W shards of the batch in W threads, see
     threaded.py) / clip / step; then the task's held-out metrics;
     metrics.jsonl and checkpoint.npz rewritten atomically, with Ctrl-C held
     back until both are written. At the end the task draws its figures.

Held-out evaluation in a second thread (``--eval-thread``; by default on
NumPy in one process when the task allows it and the run's threads leave a
core free): after epoch k's steps the loop copies the
checkpoint's arrays and takes a snapshot of the model (``Module.snapshot``),
starts the task's ``evaluate`` on the snapshot in a second thread, and
trains epoch k + 1 meanwhile; after those steps it collects epoch k's
metrics, prints its line and writes its metrics and checkpoint. Every
number, file and resume is the one of a run without the thread (tested); a
stop (Ctrl-C, an error) still ends the epoch evaluated aside first. Epoch
k's ``seconds`` are its steps and the wait for its evaluation, so the
epochs' seconds still add up to the run's.

The BLAS thread count (``cfg.threads``) and, on NumPy, the kept freed
memory (whitebox.memory) hold only inside ``run()``; the process's own
settings come back after it, also after an error or Ctrl-C.

``--resume`` continues exactly: the model, the optimizer's moments, the
schedule and the states of every generator (data order, dropout, masks)
come back from the checkpoint, so the following losses are the ones an
uninterrupted run would have produced.

On a GPU a step never waits for the device: the loss stays a 0-d array and
is turned into a Python number only when the progress bar shows it (every
``LOG_EVERY`` steps) and at the end of the epoch.
"""
import contextlib
import os
import signal
import sys
import threading
import time

import numpy as np
from tqdm.auto import tqdm

from ..checkpoint import atomic_write_npz, checkpoint_arrays, load_checkpoint
from ..functional import fused
from ..memory import keeping_freed_memory
from ..optim import AdamW, WarmupCosine, clip_grad_norm
from ..threads import limited
from . import distributed, threaded
from .config import RUNTIME_FIELDS, as_dict, make_config, validate

LOG_EVERY = 10        # steps between progress-bar updates (each one reads the loss)
# The wall-clock fields of an epoch's record: its training steps' mean, the
# whole epoch with its evaluation, and the run's total so far. Every other
# field is a number two equal runs (or a run and its resumption) agree on.
TIME_KEYS = ("step_seconds", "seconds", "elapsed")


def train(task, cfg):
    """Run (or resume) training as described in the module docstring.

    Inputs: task, the Task subclass to train (e.g.
    whitebox.tasks.classify.Classify); cfg, a TrainConfig made for it
    (whitebox.training.make_config). Returns: the list of per-epoch metric
    dicts (all epochs so far, including those before a resume).
    """
    return Training(task, cfg).run()


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during ``Training.run``: where it stopped and the checkpoint to resume from.

    ``epoch`` and ``step`` (the steps done in that epoch) say where;
    ``checkpoint`` is the path of the last whole checkpoint (None before
    the first epoch ended) and ``saved_epoch`` the epoch it holds.
    """

    def __init__(self, epoch, step, checkpoint, saved_epoch):
        self.epoch, self.step = epoch, step
        self.checkpoint, self.saved_epoch = checkpoint, saved_epoch
        where = (f"checkpoint at {checkpoint} (epoch {saved_epoch})" if checkpoint else
                 "no checkpoint yet (the first epoch did not end)")
        super().__init__(f"interrupted at epoch {epoch} step {step}; {where}")


class Training:
    """One run: ``Training(task, cfg)`` prepares it, ``run()`` trains it.

    Inputs as :func:`train`. The constructor raises (ValueError, OSError,
    ImportError, naming the setting, file or extra) for a run that cannot
    start, before a fresh run moves an earlier one aside. Afterwards
    ``task`` is the task object (data loaded), ``model`` the model on
    cfg.backend, ``folder`` the RunFolder, ``history`` the per-epoch
    metric dicts so far, ``step`` and ``epoch`` the optimizer steps and
    epochs done.
    """

    def __init__(self, task, cfg):
        self.wall_start = time.perf_counter()
        cfg = validate(task, cfg)
        self.cfg = cfg
        self.dp, self.folder = distributed.setup(cfg, task)   # dp None unless split over processes
        self.writer = self.dp is None or self.dp.writer  # only rank 0 prints and writes files
        self.say = tqdm.write if self.writer else (lambda line: None)  # above any progress bar
        try:
            self._prepare(task, cfg)
        except BaseException:
            if self.dp:
                self.dp.close()         # --processes: the started processes end too
            raise

    def _prepare(self, task, cfg):
        """The constructor's work after the run folder is known: data, model, optimizer."""
        if cfg.resume:
            saved = self.folder.open_for_resume()
            _check_resumable(task, cfg, saved)

        self.task = task(cfg)
        if self.dp:
            self.task.part, self.task.add_parts = (self.dp.rank, self.dp.size), \
                self.dp.add_numbers
        rng = np.random.default_rng(cfg.seed)   # data order and augmentation: checkpointed
        self.task.setup(rng)
        self.model = model = self.task.build_model().to(cfg.backend)
        if self.dp and not self.task.step_splits(model):
            raise ValueError(f"the loss of --task {cfg.task} couples the rows of a batch, so "
                             f"its batches cannot be split over processes: train it without "
                             f"{self.dp.flag}")
        if not cfg.resume:
            # only now that the data and the model are known to work: an earlier run in
            # the folder is moved aside (or deleted) by a run that can start
            aside = self.folder.start_fresh(cfg.overwrite)
            if aside:
                self.say(f"{cfg.out!r} held an earlier run; its files were moved to {aside!r} "
                         "(--overwrite deletes them instead)")
        self.optimizer = AdamW(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.steps_per_epoch = self.task.steps_per_epoch()
        total_steps = cfg.epochs * self.steps_per_epoch
        warmup = min(total_steps, int(round(cfg.warmup_epochs * self.steps_per_epoch)))
        self.schedule = WarmupCosine(self.optimizer, warmup, total_steps,
                                     min_lr=min(cfg.min_lr, cfg.lr))
        self.generators = {"data": rng, **model.generators(), **self.task.generators()}

        self.step, self.epoch, self.history, self.elapsed = 0, 0, [], 0.0
        if cfg.resume:
            state = load_checkpoint(self.folder.checkpoint, model, self.optimizer,
                                    rng=self.generators, scheduler=self.schedule)
            extra = state["extra"] or {}
            self.folder.check_checkpoint_run(extra.get("run_id"))
            self.task.check_state(extra.get("task"))
            self.step, self.epoch = state["step"], state["epoch"]
            self.history = self.folder.read_metrics(self.epoch)
            self.elapsed = self.history[-1]["elapsed"] if self.history else 0.0
        self.start_epoch = self.saved_epoch = self.epoch
        self.elapsed_before = self.elapsed
        self.folder.write_metrics(self.history)
        self.folder.write_config(as_dict(cfg))

    # ---------------------------------------------------------------- training
    def run(self):
        """Train to cfg.epochs (or cfg.stop_after); returns the per-epoch metric dicts.

        Ctrl-C raises :class:`Interrupted` (a KeyboardInterrupt) after the
        process settings are restored; the checkpoint on disk is whole.
        """
        cfg = self.cfg
        with contextlib.ExitStack() as scope:
            scope.enter_context(limited(cfg.threads))
            if self.dp:
                scope.callback(self.dp.close)
            if cfg.backend == "numpy":
                scope.enter_context(keeping_freed_memory())  # each step reuses the last one's
            shards = None
            if threaded.plan(cfg, self.task, self.model) == "shards":
                scope.enter_context(limited(1))   # one BLAS thread inside each shard's thread
                shards = threaded.ShardThreads(self.model, cfg.threads)
                scope.callback(shards.close)
            self.aside = EvaluationThread() if self._evaluates_aside() else None
            self.pending = None       # the epoch whose evaluation runs aside: its record, ...
            self.say(self.header(shards))
            cores = available_cores()
            if cfg.backend == "numpy" and cfg.threads * cfg.processes > cores:
                what = f"{cfg.threads} threads" if cfg.processes == 1 else \
                    f"{cfg.processes} processes of {cfg.threads} thread(s)"
                self.say(f"warning: {what} on the {cores} cores this process may use: they "
                         "take turns, and each step waits for the slowest")
            if self.dp:
                self.dp.comm.Barrier()    # the clock starts when every process is ready
            train_start = time.perf_counter()
            last_epoch = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, cfg.stop_after)
            self.current_epoch, self.in_epoch = self.start_epoch + 1, 0
            try:
                for epoch in range(self.start_epoch + 1, last_epoch + 1):
                    self._epoch(epoch, shards)
                self._end_pending()
            except KeyboardInterrupt:
                # the epoch evaluated aside still gets its checkpoint; a second Ctrl-C while
                # it waits, or its failed evaluation, leaves the one before
                with contextlib.suppress(Exception, KeyboardInterrupt):
                    self._end_pending()
                raise Interrupted(self.current_epoch, self.in_epoch,
                                  self.folder.checkpoint if self.saved_epoch else None,
                                  self.saved_epoch) from None
            except BaseException:
                with contextlib.suppress(Exception, KeyboardInterrupt):
                    self._end_pending()   # keep the last whole epoch; the error is the news
                raise
            train_seconds = time.perf_counter() - train_start
        self.model.eval()     # as the last evaluation leaves it, also when that ran aside
        figures_start = time.perf_counter()
        if cfg.figures and self.history and self.writer:
            self.task.figures(self.model, self.history, cfg.out)
        figures_seconds = time.perf_counter() - figures_start
        wall = time.perf_counter() - self.wall_start
        epochs = self.epoch - self.start_epoch
        setup = wall - train_seconds - figures_seconds
        line = (f"wall time {wall:.1f} s: {epochs} epoch{'s' * (epochs != 1)} "
                f"{train_seconds:.1f} s, setup {setup:.1f} s, figures {figures_seconds:.1f} s")
        if self.start_epoch:
            line += (f" (and {self.elapsed_before:.1f} s for epochs 1-{self.start_epoch} "
                     "before --resume)")
        self.say(line)
        return self.history

    def _epoch(self, epoch, shards):
        """Train one epoch; evaluate it here, or aside while the next one trains."""
        tic = time.perf_counter()
        record = self._train_epoch(epoch, shards)
        if self.aside is None:
            record.update(self.task.evaluate(self.model))
            seconds = time.perf_counter() - tic
            self._end_epoch(record, seconds, self._checkpoint_state())
            return
        with interrupts_deferred() as caught:
            state = self._checkpoint_state()      # as of now: the next epoch moves it on
            snapshot = self.model.snapshot()
            seconds = time.perf_counter() - tic
            self._end_pending()                   # the epoch before, evaluated meanwhile
            if not caught:   # after a Ctrl-C this epoch is dropped, as without the thread
                self.aside.start(self.task.evaluate, snapshot)
                self.pending = (record, seconds, state)

    def _collect_aside(self):
        """The epoch evaluated aside, once its evaluation is done: (record with the
        evaluation, seconds with the wait for it, checkpoint state); None if none."""
        if self.pending is None:
            return None
        tic = time.perf_counter()
        evaluation = self.aside.result()
        (record, seconds, state), self.pending = self.pending, None
        record.update(evaluation)
        return record, seconds + time.perf_counter() - tic, state

    def _end_pending(self):
        """End the epoch still evaluated aside, if any (once the next epoch has trained,
        after the last epoch, or on a stop)."""
        with interrupts_deferred():
            earlier = self._collect_aside()
            if earlier:
                self._end_epoch(*earlier)

    def _train_epoch(self, epoch, shards):
        """The steps of one epoch; returns its record (training metrics, lr, step time)."""
        cfg, task, model = self.cfg, self.task, self.model
        progress = self.writer and (sys.stderr.isatty() if cfg.progress is None else cfg.progress)
        tic = time.perf_counter()
        model.train()
        totals = {}
        self.current_epoch, self.in_epoch = epoch, 0
        bar = tqdm(task.batches(), total=self.steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}",
                   leave=False, disable=not progress, file=sys.stderr)
        for i, batch in enumerate(bar):
            batch = task.draw(model, batch)          # draws for the whole batch, before any split
            if self.dp:
                batch = self.dp.shard(batch)
            model.zero_grad()
            with self.dp.shard_draws(model) if self.dp else contextlib.nullcontext():
                if shards:
                    loss, sums = shards.step(task.train_step, batch)
                else:
                    loss, sums = task.train_step(model, batch)
            if self.dp:
                sums = self.dp.allreduce(model, sums)     # gradients of the whole global batch
            if cfg.grad_clip:
                clip_grad_norm(model, cfg.grad_clip)
            self.optimizer.step()
            self.schedule.step()
            self.step += 1
            self.in_epoch = i + 1
            for k, v in sums.items():
                totals[k] = totals[k] + v if k in totals else v
            if progress and (i % LOG_EVERY == 0 or i == self.steps_per_epoch - 1):
                bar.set_postfix(loss=f"{float(loss):.3f}")
        count = float(totals.pop("count"))
        step_seconds = (time.perf_counter() - tic) / self.steps_per_epoch  # the sums waited
        self.epoch = epoch
        return dict(epoch=epoch, step=self.step,
                    **{f"train_{k}": float(v) / count for k, v in totals.items()},
                    lr=float(self.optimizer.lr), step_seconds=step_seconds)

    def _checkpoint_state(self):
        """What checkpoint.npz holds for the epoch just trained (copies; None where this
        process writes no files)."""
        if not self.writer:
            return None
        return checkpoint_arrays(self.model, self.optimizer, step=self.step, epoch=self.epoch,
                                 rng=self.generators, scheduler=self.schedule,
                                 extra={"config": as_dict(self.cfg), "run_id": self.folder.run_id,
                                        "task": self.task.state()})

    def _end_epoch(self, record, seconds, state):
        """Print an evaluated epoch's line and write its metrics and checkpoint.

        ``seconds``: the epoch's own time, its steps and its evaluation (or,
        evaluated aside, the wait for it), so the epochs' seconds add up to
        the run's time less the files' writing.
        """
        self.elapsed += seconds
        lr, step_seconds = record.pop("lr"), record.pop("step_seconds")     # the earlier order
        record.update(lr=lr, seconds=seconds, elapsed=self.elapsed, step_seconds=step_seconds)
        self.history.append(record)
        if self.writer:       # the other processes' records lack the measures and probes
            self.say(self.task.epoch_line(record) + f" | {seconds:.1f}s")
        # Metrics first, then the checkpoint: after a crash in between, resume
        # drops the metric line of the epoch the checkpoint does not hold.
        with interrupts_deferred():
            self.folder.write_metrics(self.history)
            if state is not None:
                atomic_write_npz(self.folder.checkpoint, state)
            self.saved_epoch = record["epoch"]

    def _evaluates_aside(self):
        """Whether held-out evaluation runs in a second thread (--eval-thread; default: on
        NumPy, in one process, when the task allows it and a core is free of the run's
        training threads)."""
        cfg = self.cfg
        if cfg.eval_thread is not None:
            return cfg.eval_thread                 # validate() refused a run that cannot
        return (cfg.backend == "numpy" and self.dp is None and self.task.evaluate_is_pure
                and cfg.threads < available_cores())

    def header(self, shards):
        """The first line: the task, the whole model and how the run uses the machine."""
        cfg, model = self.cfg, self.model
        attention = (getattr(model, "config", None) or {}).get("attention")
        attention = "official MSSA" if not attention else "MSSA " + ", ".join(
            f"{k} {v}" for k, v in attention.items())
        attention = getattr(model, "ATTENTION", None) or attention   # a standard transformer
        if cfg.backend != "numpy":
            machine = f"{cfg.backend}"
        elif shards:
            machine = f"numpy, {cfg.threads} threads, each batch split in {cfg.threads}"
        elif cfg.threads > 1:
            machine = (f"numpy, {cfg.threads} BLAS threads (the task's loss couples the rows "
                       "of a batch, so it is not split)")
        else:
            machine = "numpy, 1 thread"
        if fused.enabled() and cfg.backend == "numpy":
            machine += " | fused loops (Numba)"
        if self.aside:
            machine += " | evaluation in a second thread"
        machine += f" | {self.dp.describe()}" if self.dp else " | no MPI"
        return (f"{self.task.name}: {type(model).__name__} --model {cfg.model}, {attention}, "
                f"{model.num_params():,} parameters | {self.task.describe()} | {cfg.epochs} "
                f"epochs of {self.steps_per_epoch} steps of {cfg.batch_size} | {machine} | "
                f"out {cfg.out}"
                + (f" | resuming after epoch {self.start_epoch}" if cfg.resume else ""))


class EvaluationThread:
    """Runs one evaluation at a time in a second thread: ``start(fn, *args)``, then ``result()``.

    NumPy lets go of Python's lock inside its array loops and BLAS, so an
    evaluation of large held-out batches mostly runs beside the training
    steps of the next epoch rather than between them.
    """

    def __init__(self):
        self._thread = None

    def start(self, fn, *args):
        def work():
            try:
                self._result = fn(*args)
            except BaseException as error:      # handed to result(), in the training thread
                self._error = error
        self._result = self._error = None
        self._thread = threading.Thread(target=work, name="whitebox-evaluate", daemon=True)
        self._thread.start()

    def result(self):
        """Wait for the evaluation; returns its value or raises its error."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


def available_cores():
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_held = None      # the Ctrl-Cs held back by the outermost interrupts_deferred block now open


@contextlib.contextmanager
def interrupts_deferred():
    """Ctrl-C (SIGINT) inside the block raises KeyboardInterrupt only when the block ends.

    So the files written inside are written whole. The block gives the list
    of the Ctrl-Cs held so far, so its code can skip work not yet begun. A
    block inside another leaves the holding to the outer one. Outside the
    main thread (where Python delivers signals) the block changes nothing.
    """
    global _held
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield []
        return
    if _held is not None:
        yield _held
        return
    caught = _held = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield caught
    finally:
        _held = None
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


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
