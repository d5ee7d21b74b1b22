"""CRATE against the standard transformer on every task, the paper's ablation, and segmentation.

    python -m whitebox.compare [--tasks classify mae lm mlm] [--seeds 0 1 2] [--fast] [--out DIR]
                               [--workers N]

Per task, CRATE and its standard counterpart train through the one training
loop (whitebox.train.run) with the task's data, optimizer, schedule,
augmentation and number of steps:

    classify  CRATE       vs ViT     held-out accuracy        (higher is better)
    mae       CRATE-MAE   vs MAE     masked MSE               (lower)
    lm        CRATE-GPT   vs GPT     nats per character       (lower)
    mlm       CRATE-BERT  vs BERT    masked accuracy          (higher)

CRATE keeps the task's width (--dim); the baseline's width is chosen so its
parameter count is the nearest to CRATE's among the widths its heads divide
(``match_width``), and the pair must lie within 10%. With classify in
--tasks, the paper's 2 x 2 ablation (MSSA or MHSA, ISTA or MLP: the classify
task's --attention-kind and --mlp) trains too, each hybrid matched to CRATE
the same way, and the emergent segmentation of the class-token attention
(whitebox.segmentation.digit_scores: mIoU of the best head per digit class)
is scored on every trained classifier.

Every run keeps each task's default recipe (its epochs, steps, batch size and
schedule; with --fast, the task's --fast plus FAST_SETTINGS) and trains on one
thread; --workers N (default: one per core) trains N runs at once, each in its
own process, the longest first (by the estimate below). Before it starts, the
command prints the plan's estimated time: one training step and one
evaluation of each model timed on this machine (Counter.seconds), scaled to
the run's steps and scheduled on the N workers. (``compare(...,
verbose=False)`` skips the estimate and runs the jobs in plan order.) On two
idle cores the default plan (33 runs) is about 63 CPU-minutes, about 32
minutes with two workers; --fast about a minute.

Every (task, model, seed) has its own run folder DIR/<task>/<model>/seed<S>
and its epoch lines in DIR/<task>/<model>/seed<S>.log; a rerun skips the
finished runs (config.json, a checkpoint and the metrics of the last epoch)
and continues an interrupted one with resume. One progress bar runs over the
whole plan (only on a terminal), and a line per finished run gives its held-out
metric. The command writes

    DIR/compare.md     the tables: params, metric mean ± std over seeds, seconds per step
    DIR/compare.png    held-out metric per epoch of each pair; per-layer Rc and
                       non-zero fraction of both models of a pair
    DIR/compare.json   {"rows": [...], "layers": [...], "ablation": [...], "segmentation": [...]}

Rc per layer is each task's own measure (whitebox.rate.layer_measures on held-out
inputs after the last epoch): for CRATE, Rc of the MSSA input on its subspaces
and the non-zero fraction of the ISTA output; for the standard models, Rc of
the attention input on the heads' value subspaces and the non-zero fraction of
the GELU hidden units. Means over seeds.
"""
import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time

import numpy as np

PROG = "whitebox.compare"
TASK_NAMES = ("classify", "mae", "lm", "mlm")
# task -> (CRATE's --model, the baseline's --model)
PAIRS = {"classify": ("crate", "vit"), "mae": ("crate", "mae"), "lm": ("crate", "gpt"),
         "mlm": ("crate", "bert")}
# task -> (the metrics.jsonl key of the held-out metric, its name, higher is better)
METRICS = {"classify": ("test_acc", "held-out accuracy", True),
           "mae": ("test_mse", "masked MSE", False),
           "lm": ("test_loss", "nats per character", False),
           "mlm": ("test_acc", "masked accuracy", True)}
# the paper's 2 x 2 on classify, CRATE first
ABLATION = (("mssa", "ista"), ("mssa", "mlp"), ("mhsa", "ista"), ("mhsa", "mlp"))
TOLERANCE = 0.10          # the pair's parameter counts differ by at most this share
SEGMENTED = ("crate", "vit")
FAST_SEEDS = (0, 1)
# --fast: each task's own --fast (tiny models), trained longer than that smoke test so the
# curves leave chance; the whole command stays far inside ten minutes on two cores
FAST_SETTINGS = {"classify": dict(n_train=2048, n_test=500, epochs=8),
                 "mae": dict(n_train=2048, epochs=6),
                 "lm": dict(epochs=4, steps_per_epoch=40, eval_windows=64),
                 "mlm": dict(epochs=4, steps_per_epoch=40, eval_windows=64)}
SEEDS = (0, 1, 2)
# a training step of the loop over the step Counter.seconds times (the batch's draws,
# the optimizer, clipping): the ratio measured on short runs of every model
STEP_OVERHEAD = 1.1
SEGMENT_SECONDS = 1.5     # scoring one classifier's segmentation (measured, one core)


@dataclasses.dataclass
class Job:
    """One training run of the plan."""
    task: str
    model: str                       # the row's name: crate, vit, ..., or mssa+mlp
    settings: dict                   # run()'s settings besides fast, seed and out
    seed: int
    out: str
    params: int
    ablation: tuple = None           # (attention, mlp) of an ablation run
    seconds: float = 0.0             # the estimated seconds of the run on one idle core

    def label(self):
        return f"{self.task} {self.model} seed {self.seed}"

    def segmented(self):
        """Whether the run's trained classifier is scored for segmentation."""
        return self.task == "classify" and (self.ablation is not None or
                                            self.model in SEGMENTED)


# ------------------------------------------------------------------ widths
def lcm(a, b):
    return a * b // math.gcd(a, b)


def match_width(count, target, step, largest, tolerance=TOLERANCE):
    """The width d (a positive multiple of ``step``, at most ``largest``) whose count(d)
    is nearest to ``target``.

    count: d -> parameter count, increasing in d; found by bisection over the multiples.
    Returns: (d, count(d)). Raises ValueError when no width comes within
    ``tolerance`` (a share of target).
    """
    if step < 1 or target < 1:
        raise ValueError(f"step and target must be positive, got step {step} and target "
                         f"{target}")
    top = largest // step
    cache = {}

    def n(i):
        if i not in cache:
            cache[i] = count(i * step)
        return cache[i]

    lo, hi = 1, max(top, 1)
    if n(hi) < target:
        best = hi
    else:
        while lo < hi:                            # the first multiple with count >= target
            mid = (lo + hi) // 2
            if n(mid) >= target:
                hi = mid
            else:
                lo = mid + 1
        best = min((i for i in (lo - 1, lo) if i >= 1), key=lambda i: abs(n(i) - target))
    found = n(best)
    if abs(found - target) > tolerance * target:
        raise ValueError(f"no width (multiples of {step}) gives a parameter count within "
                         f"{100 * tolerance:.0f}% of {target:,}: the nearest is {found:,} at "
                         f"width {best * step}")
    return best * step, found


class Counter:
    """Parameter counts of a task's models at given settings: the data set up once per
    (task, model), a model built per count (cheap; nothing trains)."""

    def __init__(self, fast):
        self.fast, self.tasks, self.setup_seconds = fast, {}, {}

    def __call__(self, task, settings):
        return self.task(task, settings).build_model().num_params()

    def task(self, task, settings):
        """The task object of ``task`` configured with ``settings`` (on top of compare's own)."""
        from .train import get_task
        from .training.config import make_config
        task_cls = get_task(task)
        cfg = make_config(task_cls, dict(self.extra(task), **settings, out=os.devnull),
                          fast=self.fast)
        key = (task, cfg.model)
        if key not in self.tasks:
            tic = time.process_time()
            t = task_cls(cfg)
            t.setup(np.random.default_rng(cfg.seed))
            self.tasks[key] = t
            self.setup_seconds[key] = time.process_time() - tic
        t = self.tasks[key]
        t.cfg, t.opt = cfg, cfg.options               # the data stay; the sizes change
        return t

    def seconds(self, task, settings, repeats=2):
        """The estimated CPU seconds of one run of ``task`` at ``settings`` on one thread:
        setup + epochs * (steps per epoch * STEP_OVERHEAD * step + evaluation), with the
        data's setup, one training step (forward and backward on one batch; the fastest of
        ``repeats`` after a first) and one held-out evaluation of a fresh model timed now
        (process time), on this machine."""
        from .threads import limited
        t = self.task(task, settings)
        model = t.build_model()
        with limited(1):
            batch = t.draw(model, next(iter(t.batches())))
            model.train()
            times = []
            for _ in range(repeats + 1):
                tic = time.process_time()
                model.zero_grad()
                t.train_step(model, batch)
                times.append(time.process_time() - tic)
            tic = time.process_time()
            t.evaluate(model)
            evaluation = time.process_time() - tic
        step = min(times[1:]) if repeats else times[0]
        return self.setup_seconds[(task, t.cfg.model)] + t.cfg.epochs * (
            t.steps_per_epoch() * STEP_OVERHEAD * step + evaluation)

    def options(self, task):
        """The task's resolved own settings under this --fast."""
        from .train import get_task
        from .training.config import make_config
        return make_config(get_task(task), dict(self.extra(task), out=os.devnull),
                           fast=self.fast).options

    def extra(self, task):
        """compare's own settings of ``task`` on top of its --fast (none without --fast)."""
        return dict(FAST_SETTINGS[task]) if self.fast else {}


def width_step(task, options):
    """Widths a task's standard model accepts: multiples of the heads (MAE: and of 4)."""
    return lcm(options.heads, 4) if task == "mae" else options.heads


def _width_settings(task, settings, d, heads):
    s = dict(settings, dim=d)
    if task == "classify" and s["model"] == "crate" and s.get("attention_kind") != "mhsa":
        s["dim_head"] = d // heads                     # MSSA heads of width d / K
    return s


def matched_settings(task, counter, verbose=True):
    """[(model, settings, params)] of CRATE and its baseline(s) at matched parameter counts.

    CRATE keeps the task's width when some width of each other model comes within
    TOLERANCE of its count; otherwise the nearest CRATE width (multiples of the same
    step, up to half the width away) that lets every model match. classify adds the
    ablation hybrids (model names "mssa+mlp", ...).
    """
    options = counter.options(task)
    crate, base = PAIRS[task]
    step = width_step(task, options)
    others = [(base, dict(model=base), step)]
    if task == "classify":
        for attention, mlp in ABLATION[1:]:
            others.append((f"{attention}+{mlp}",
                           dict(model="crate", attention_kind=attention, mlp=mlp),
                           options.heads))
    d0 = options.dim
    widths = sorted({d for d in range(step, 2 * d0 + 1, step) if abs(d - d0) <= d0 / 2} | {d0},
                    key=lambda d: (abs(d - d0), d))
    error = None
    for d in widths:
        crate_settings = dict(model=crate) if d == d0 else _width_settings(
            task, dict(model=crate), d, options.heads)
        target = counter(task, crate_settings)
        rows = [(crate, crate_settings, target)]
        try:
            for name, settings, s in others:
                dim, params = match_width(
                    lambda w, settings=settings: counter(
                        task, _width_settings(task, settings, w, options.heads)), target, s, 4 * d0)
                rows.append((name, _width_settings(task, settings, dim, options.heads), params))
        except ValueError as err:
            error = error or err
            continue
        break
    else:
        raise ValueError(f"{task}: {error}; nor at any CRATE width within half of {d0}")
    if verbose:
        for name, settings, params in rows:
            print(f"{task:9s} {name:10s} dim {settings.get('dim', d0):4d}  "
                  f"{params:,} parameters ({100 * (params / target - 1):+.1f}% of CRATE's)")
    return rows


def plan(tasks, seeds, out, counter, verbose=True):
    """Every Job of the comparison, in training order."""
    jobs = []
    for task in tasks:
        for name, settings, params in matched_settings(task, counter, verbose):
            ablation = None
            if task == "classify":
                kinds = (settings.get("attention_kind", "mssa"), settings.get("mlp", "ista"))
                ablation = kinds if settings["model"] == "crate" else None
            settings = dict(counter.extra(task), **settings)
            for seed in seeds:
                jobs.append(Job(task, name, settings, seed,
                                os.path.join(out, task, name.replace("+", "-"), f"seed{seed}"),
                                params, ablation))
    return jobs


# ------------------------------------------------------------------ runs
def state(out):
    """'done' (config, checkpoint and the last epoch's metrics), 'partial' (a checkpoint
    to resume from) or 'new'."""
    from .training.runs import RunFolder
    folder = RunFolder(out)
    if not (os.path.isfile(folder.config) and os.path.isfile(folder.checkpoint)):
        return "new"
    try:
        saved = folder.open_for_resume()
        history = folder.read_metrics(saved["epochs"])
    except (OSError, ValueError, KeyError):
        return "partial"
    return "done" if history and history[-1]["epoch"] == saved["epochs"] else "partial"


def history_of(out):
    """The metric records of the finished run in ``out``."""
    from .training.runs import RunFolder
    folder = RunFolder(out)
    saved = folder.open_for_resume()
    return folder.read_metrics(saved["epochs"])


def train_job(job, fast):
    """Train (or resume, or skip) one job on one thread; returns its history."""
    from .train import run
    where = state(job.out)
    if where == "done":
        return history_of(job.out)
    settings = dict(job.settings, seed=job.seed, out=job.out, figures=False, progress=False,
                    threads=1)
    if where == "partial":
        try:
            return run(job.task, fast=fast, resume=True, **settings)
        except (OSError, ValueError):
            pass                                  # not resumable: start it over
    return run(job.task, fast=fast, overwrite=True, **settings)


def segmentation_of(out):
    """mIoU and best head per class of the trained classifier in ``out`` (digit pixels)."""
    from .segmentation import digit_scores
    from .train import load_run
    _, task, model = load_run(out)
    scores = digit_scores(model, task.test_images, task.test_labels, task.mean, task.std)
    return float(scores["miou"]), [int(h) for h in scores["best_heads"]]


def log_path(job):
    """The file that holds the epoch lines of ``job``'s training: DIR/<task>/<model>/seed<S>.log."""
    return job.out + ".log"


def do_job(job, fast):
    """Train ``job`` (its epoch lines go to log_path(job)) and score the segmentation of a
    classifier: returns (history, (miou, best_heads) or None), or ("interrupted", why)
    after Ctrl-C (the run keeps its last checkpoint)."""
    os.makedirs(os.path.dirname(job.out), exist_ok=True)
    try:
        with open(log_path(job), "a") as log, contextlib.redirect_stdout(log):
            history = train_job(job, fast)
    except KeyboardInterrupt as stop:     # Interrupted too, which does not cross processes
        return "interrupted", str(stop)
    seg = None
    if job.segmented():
        seg = segmentation_of(job.out)
    return history, seg


def _child(job, fast, conn):
    """A worker process: one job, its result sent through ``conn``."""
    try:
        conn.send(do_job(job, fast))
    except BaseException as err:                      # sent, not lost with the process
        conn.send(("error", f"{type(err).__name__}: {err}"))
    finally:
        conn.close()


def run_jobs(jobs, fast, workers, bar=None, say=None):
    """Run every job, ``workers`` at once (a process started with "spawn" per job, one
    thread each; 1: in this process), the longest (job.seconds) first. Returns
    {job.out: (history, seg)}. Ctrl-C stops every running job at once (each keeps the
    checkpoint of its last whole epoch) and raises KeyboardInterrupt."""
    order = sorted(jobs, key=lambda j: -j.seconds)
    results = {}

    def finished(job, result):
        if result[0] == "interrupted":
            raise KeyboardInterrupt(f"{job.label()}: {result[1]}")
        if result[0] == "error":
            raise RuntimeError(f"{job.label()} failed: {result[1]} (its epoch lines: "
                               f"{log_path(job)})")
        results[job.out] = result
        if say:
            key, metric, _ = METRICS[job.task]
            say(f"{job.label()}: {metric} {result[0][-1][key]:.4f} "
                f"({result[0][-1].get('elapsed', 0):.0f} s)")
        if bar is not None:
            bar.update(1)

    if workers == 1:
        for job in order:
            finished(job, do_job(job, fast))
        return results
    import multiprocessing
    from multiprocessing.connection import wait
    context = multiprocessing.get_context("spawn")
    waiting, running = list(order), {}           # conn -> (job, process)
    try:
        while waiting or running:
            while waiting and len(running) < workers:
                job = waiting.pop(0)
                mine, theirs = context.Pipe(duplex=False)
                process = context.Process(target=_child, args=(job, fast, theirs), daemon=True)
                process.start()
                theirs.close()
                running[mine] = (job, process)
            for conn in wait(list(running)):
                job, process = running.pop(conn)
                try:
                    result = conn.recv()
                except EOFError:                           # it died before it could send
                    process.join()
                    result = ("error", f"its process ended with exit code {process.exitcode}")
                conn.close()
                process.join()
                finished(job, result)
    except BaseException as stop:
        for conn, (job, process) in running.items():
            if isinstance(stop, KeyboardInterrupt):    # they had Ctrl-C too: let them save
                process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join()
            conn.close()
        raise
    return results


def estimate(jobs, counter, workers):
    """Set each job's ``seconds`` (Counter.seconds, timed once per model) and return
    (the CPU seconds of the plan, the wall seconds of its longest-first schedule on
    ``workers`` idle cores)."""
    import heapq
    timed = {}
    for job in jobs:
        key = (job.task, job.model)
        if key not in timed:
            timed[key] = counter.seconds(job.task, job.settings) + \
                (SEGMENT_SECONDS if job.segmented() else 0.0)
        job.seconds = timed[key]
    ends = [0.0] * workers
    for job in sorted(jobs, key=lambda j: -j.seconds):
        heapq.heappush(ends, heapq.heappop(ends) + job.seconds)
    return sum(j.seconds for j in jobs), max(ends)


# ------------------------------------------------------------------ results
def _mean_std(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std())


def summarise(jobs, histories, segmentation):
    """compare.json's dict from the jobs, their histories (job.out -> records) and the
    segmentation scores (job.out -> (miou, best_heads)) of the classifiers."""
    groups = {}
    for job in jobs:
        groups.setdefault((job.task, job.model), []).append(job)
    rows, layers, ablation, seg = [], [], [], []
    for (task, model), group in groups.items():
        key, metric, _ = METRICS[task]
        last = [histories[j.out][-1] for j in group]
        mean, std = _mean_std([r[key] for r in last])
        seconds = float(np.median([h["step_seconds"] for j in group
                                   for h in histories[j.out][1:] or histories[j.out]]))
        seeds = [j.seed for j in group]
        is_pair = model in PAIRS[task]
        if is_pair:
            rows.append(dict(task=task, model=model, params=group[0].params, metric=metric,
                             mean=mean, std=std, seconds_per_step=seconds, seeds=seeds))
            rc = np.mean([r["rc"] for r in last], axis=0)
            nonzero = np.mean([r["nonzero"] for r in last], axis=0)
            layers += [dict(task=task, model=model, layer=i + 1, compression_rc=float(c),
                            sparsity=float(z)) for i, (c, z) in enumerate(zip(rc, nonzero))]
        if group[0].ablation is not None:
            mious = [segmentation[j.out][0] for j in group]
            ablation.append(dict(attention=group[0].ablation[0], mlp=group[0].ablation[1],
                                 params=group[0].params, mean=mean, std=std,
                                 miou=float(np.mean(mious))))
        if task == "classify" and model in SEGMENTED:
            seg.append(dict(model=model, miou=float(np.mean([segmentation[j.out][0]
                                                              for j in group])),
                            best_heads=segmentation[group[0].out][1]))
    return dict(rows=rows, layers=layers, ablation=ablation, segmentation=seg)


def markdown(result, fast):
    """compare.md: the comparison, the ablation and the segmentation tables."""
    def pm(mean, std, seeds, scale=1.0, digits=3):
        text = f"{scale * mean:.{digits}f}"
        return text + (f" ± {scale * std:.{digits}f}" if seeds > 1 else "")

    lines = ["| task | model | params | metric | mean ± std | seeds | s / step |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['task']} | {r['model']} | {r['params']:,} | {r['metric']} | "
                     f"{pm(r['mean'], r['std'], len(r['seeds']), digits=4)} | "
                     f"{len(r['seeds'])} | {r['seconds_per_step']:.4f} |")
    seeds = sorted({s for r in result["rows"] for s in r["seeds"]})
    if result["ablation"]:
        lines += ["", "| attention | MLP half | params | held-out accuracy | seg. mIoU |",
                  "|---|---|---|---|---|"]
        for r in result["ablation"]:
            lines.append(f"| {r['attention'].upper()} | {r['mlp'].upper()} | {r['params']:,} | "
                         f"{pm(r['mean'], r['std'], len(seeds), digits=4)} | {r['miou']:.3f} |")
    if result["segmentation"]:
        lines += ["", "| classifier | seg. mIoU | best head per digit class |", "|---|---|---|"]
        for r in result["segmentation"]:
            lines.append(f"| {r['model']} | {r['miou']:.3f} | "
                         f"{' '.join(map(str, r['best_heads']))} |")
    lines += ["", f"{'--fast: tiny runs. ' if fast else ''}Seeds {' '.join(map(str, seeds))}; "
              "mean ± std (population) over seeds of the last epoch's held-out metric; seconds "
              "per step: the median over seeds and epochs after the first (which carries "
              "the compilation). Pairs at matched parameter counts "
              f"(within {100 * TOLERANCE:.0f}%). Segmentation: mIoU of the class token's "
              "last-layer attention (top 60% of the mass, best head per digit class) against "
              "the digit's pixels, mean over seeds; best heads of the first seed."]
    return "\n".join(lines) + "\n"


def figure(result, jobs, histories, path):
    """compare.png: per task, the held-out metric per epoch, Rc and non-zero fraction per
    layer, both models of the pair (means over seeds)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    tasks = list(dict.fromkeys(r["task"] for r in result["rows"]))
    fig = Figure(figsize=(12, 3.2 * len(tasks)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(tasks), 3, squeeze=False))
    for row, task in zip(axes, tasks):
        key, metric, _ = METRICS[task]
        for model in PAIRS[task]:
            runs = [histories[j.out] for j in jobs if j.task == task and j.model == model]
            epochs = min(len(h) for h in runs)
            curve = np.mean([[r[key] for r in h[:epochs]] for h in runs], axis=0)
            row[0].plot(np.arange(1, epochs + 1), curve, marker="o", ms=3, label=model)
            mine = [r for r in result["layers"] if r["task"] == task and r["model"] == model]
            x = [r["layer"] for r in mine]
            row[1].plot(x, [r["compression_rc"] for r in mine], marker="o", label=model)
            row[2].plot(x, [r["sparsity"] for r in mine], marker="o", label=model)
        for ax, title, xlabel in ((row[0], f"{task}: {metric}", "epoch"),
                                  (row[1], f"{task}: Rc per layer", "layer"),
                                  (row[2], f"{task}: non-zero fraction per layer", "layer")):
            ax.set_title(title, fontsize=10)
            ax.set_xlabel(xlabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        row[2].set_ylim(0, 1.02)
    fig.savefig(path, dpi=100)


# ------------------------------------------------------------------ the command
def default_workers():
    """Runs at once by default: one per core this process may use."""
    from .training.loop import available_cores
    return available_cores()


def compare(tasks=TASK_NAMES, seeds=None, fast=False, out=None, progress=None, verbose=True,
            workers=1):
    """Train the plan (skipping finished runs), ``workers`` runs at once (each run on one
    thread; None: one per core), score it, write the three files; returns compare.json's
    dict.

    workers > 1 trains in processes started with multiprocessing's "spawn", which imports
    the calling script again: call compare from a script only under
    ``if __name__ == "__main__":`` (a notebook or ``python -m whitebox.compare`` needs nothing).
    """
    from tqdm.auto import tqdm
    tasks = list(dict.fromkeys(tasks))
    for t in tasks:
        if t not in TASK_NAMES:
            raise ValueError(f"tasks must be among {TASK_NAMES}, got {t!r}")
    seeds = list(dict.fromkeys(FAST_SEEDS if fast else SEEDS)) if seeds is None else \
        list(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise ValueError("seeds must name at least one seed, got none")
    workers = default_workers() if workers is None else workers
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    out = out or ("runs/compare-fast" if fast else "runs/compare")
    counter = Counter(fast)
    jobs = plan(tasks, seeds, out, counter, verbose)
    todo = [j for j in jobs if state(j.out) != "done"]
    workers = max(1, min(workers, len(todo)))
    if verbose:
        cpu, wall = estimate(todo, counter, workers)
        print(f"{len(jobs)} runs, {len(jobs) - len(todo)} finished before; the other "
              f"{len(todo)}, {workers} at once on one thread each, take about "
              f"{wall / 60:.1f} minutes ({cpu / 60:.1f} CPU-minutes at the speed of one "
              f"step and one evaluation of each model timed now, load {_load()})", flush=True)
    tic = time.perf_counter()
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="compare", unit="run",
               disable=not sys.stderr.isatty() if progress is None else not progress)
    say = (lambda line: tqdm.write(line)) if verbose else None
    try:
        done = run_jobs(todo, fast, workers, bar, say)
    finally:
        bar.close()
    histories, segmentation = {}, {}
    for job in jobs:
        if job.out in done:
            histories[job.out], seg = done[job.out]
        else:
            histories[job.out] = history_of(job.out)
            seg = segmentation_of(job.out) if job.segmented() else None
        if seg is not None:
            segmentation[job.out] = seg
    result = summarise(jobs, histories, segmentation)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "compare.json"), "w") as f:
        json.dump(result, f, indent=1)
    table = markdown(result, fast)
    with open(os.path.join(out, "compare.md"), "w") as f:
        f.write(table)
    figure(result, jobs, histories, os.path.join(out, "compare.png"))
    if verbose:
        print(table, end="")
        print(f"wrote {os.path.join(out, 'compare.md')}, compare.png and compare.json "
              f"({(time.perf_counter() - tic) / 60:.1f} minutes)")
    return result


def _load():
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "unknown"


def main(argv=None):
    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", choices=TASK_NAMES, default=list(TASK_NAMES),
                   help="tasks to compare (default: all four)")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help=f"seeds of every run (default: {' '.join(map(str, SEEDS))}; with "
                        f"--fast {' '.join(map(str, FAST_SEEDS))})")
    p.add_argument("--fast", action="store_true", help="each task's tiny --fast runs")
    p.add_argument("--out", default=None,
                   help="folder of the runs and the results (default: runs/compare, with "
                        "--fast runs/compare-fast)")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="runs trained at once, each in its own process on one thread "
                        "(default: one per core, here %(default)s)")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = p.parse_args(argv)
    from .training import Interrupted
    try:
        return compare(args.tasks, args.seeds, args.fast, args.out, workers=args.workers)
    except (ValueError, OSError, ImportError) as err:
        if args.debug:
            raise
        sys.stderr.write(f"{PROG}: error: {err}\n")
        sys.exit(2)
    except (Interrupted, KeyboardInterrupt) as stop:
        if args.debug:
            raise
        why = f" ({stop})" if str(stop) else ""
        sys.stderr.write(f"{PROG}: interrupted{why}; the same command continues where it "
                         "stopped\n")
        sys.exit(130)


if __name__ == "__main__":
    main(sys.argv[1:])
