"""Profile one float32 CRATE training step op by op: whitebox beside PyTorch eager and torch.compile.

    python benchmarks/profile_step.py                          # cifar-crate-t, 1 thread
    python benchmarks/profile_step.py --configs mnist-demo --threads 2
    python benchmarks/profile_step.py --no-fused --no-torch    # NumPy only, whitebox alone
    python benchmarks/profile_step.py --clock cpu              # whitebox by CPU time (load)

One step is forward + cross-entropy + backward (+ zero_grad), as
bench_crate.py times it, on the same configs and inputs. For every op of the
step the table gives its time per step (ms), its work (GEMMs: FLOPs counted
from the shapes; everything else: the bytes of the arrays it reads and
writes, each once), the achieved rate, that rate against a same-run
reference (GEMMs: a 2048^3 product; the rest: a copy of an array as large
as the step's tokens (B, N, d), np.copyto on one thread or torch's copy_;
a 64 MiB copy, from memory, is printed beside it) and its share of the step
as instrumented. The last rows: the total of the ops, the rest of the
instrumented step (Python, allocation, module glue and the timers' own
cost) and the step measured without any timer or profiler.

- whitebox: the step runs with its functional ops wrapped by timers, where
  they really run. The module-level functions the Modules call
  (layernorm_forward, softmax_fast_forward, ista_forward, ...) are replaced
  by wrappers that time each call; the time a function spends outside the
  products and wrapped functions it calls is its own row (ISTA's threshold
  and mask, the bias add, ...). Functions with matrix products are first
  recompiled from their source with every ``a @ b`` and ``xp.matmul(...)``
  turned into a timed np.matmul, so each product is a row of its own, keyed
  by its shape (m x k x n, times the batch of a stacked product) and by
  whether it runs in the forward or the backward; the residual additions of
  ResidualBlock are timed the same way. The wrapped step's loss is checked to
  equal the plain step's; wrapped and plain steps alternate. Nothing in
  the library changes: the wrappers are swapped in for the profiled steps
  and out again.
- PyTorch eager (the twin of whitebox.torch_twins.crate, ISTA as three
  products) and torch.compile of the twin with the folded ISTA
  M = I + eta (W - W^T W): torch.profiler (CPU), the self CPU time of each
  aten op per step, grouped into the same rows (GEMMs by shape; LayerNorm,
  softmax, ReLU/threshold, copies, the loss...). The compiled model's
  generated C++ kernels (kernel profiling switched on) are one row "fused
  elementwise kernels".

--threads 1 (the default) runs BLAS and PyTorch on one thread, so per-op
times are clean (with --clock cpu whitebox's ops and references are timed
by CPU time, which other processes disturb far less; PyTorch's profiler
keeps wall time); --threads 2 gives BLAS and PyTorch two threads (training
with --threads 2 runs two shards of one thread instead; bench_crate.py times
that whole step). Median over --repeats profiled steps after warm-up steps.
The fused loops (Numba) run where installed unless --no-fused. Only NumPy is
needed: without PyTorch (or with --no-torch) its columns are left empty.
"""
import argparse
import ast
import contextlib
import inspect
import json
import os
import statistics
import sys
import textwrap
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_state, warn_if_loaded  # noqa: E402
import bench_crate  # noqa: E402
from bench_crate import CONFIGS, gemm_flops  # noqa: E402

import whitebox as wb  # noqa: E402
from whitebox import memory, threads  # noqa: E402
from whitebox.functional import fused  # noqa: E402

CONTENDERS = ("whitebox", "eager", "compiled")
PHASES = {"forward": "fwd", "loss": "loss", "backward": "bwd", "zero_grad": "zero"}

# ------------------------------------------------------------------ reference rates


def copy_bandwidth(nbytes, torch=None, repeats=5, clock=time.perf_counter):
    """Bytes per second of a float32 array copy of ``nbytes`` (read + write), median of
    ``repeats`` (after two warm-up copies): np.copyto (one thread, as every NumPy
    elementwise pass), or torch's copy_ (on torch's threads)."""
    n = max(nbytes // 4, 1)
    if torch is None:
        a, b = np.ones(n, np.float32), np.empty(n, np.float32)
        copy = lambda: np.copyto(b, a)                         # noqa: E731
    else:
        a, b = torch.ones(n), torch.empty(n)
        copy = lambda: b.copy_(a)                              # noqa: E731
    return 2 * n * 4 / bench_crate.median_seconds(copy, repeats, clock)


def token_bytes(name):
    """Bytes of the step's token array (B, N, d) in float32: the size most ops move."""
    c = CONFIGS[name]
    n = (c["image_size"] // c["patch_size"]) ** 2 + 1
    return c["batch"] * n * c["dim"] * 4


# ------------------------------------------------------------------ whitebox: the timers

def _arrays(obj, depth=2):
    """The numpy arrays in obj (an array, or tuples/lists/dicts of them, ``depth`` deep)."""
    if isinstance(obj, np.ndarray):
        return [obj]
    if depth and isinstance(obj, (tuple, list)):
        return [a for o in obj for a in _arrays(o, depth - 1)]
    if depth and isinstance(obj, dict):
        return [a for o in obj.values() for a in _arrays(o, depth - 1)]
    return []


def _unique(arrays):
    seen, out = set(), []
    for a in arrays:
        if id(a) not in seen:
            seen.add(id(a))
            out.append(a)
    return out


def moved_bytes(args, result):
    """Bytes an op reads and writes, each array once: its array arguments (caches one
    level deep), its first result (written even when it is an input: in place) and the
    other arrays it returns that are not (views of) its inputs."""
    inputs = _unique(_arrays(args))
    primary = result[0] if isinstance(result, tuple) and result else result
    outputs = _unique(_arrays(primary))
    rest = [a for a in _unique(_arrays(result)) if all(a is not o for o in outputs)]
    outputs += [a for a in rest if not any(np.may_share_memory(a, i) for i in inputs)]
    return sum(a.nbytes for a in inputs) + sum(a.nbytes for a in outputs)


def gemm_shape(a, b):
    """(batch, m, k, n) of np.matmul(a, b) (1-D operands as vectors)."""
    a_shape = a.shape if a.ndim > 1 else (1,) + a.shape
    b_shape = b.shape if b.ndim > 1 else b.shape + (1,)
    lead = np.broadcast_shapes(a_shape[:-2], b_shape[:-2])
    return int(np.prod(lead, dtype=np.int64)), a_shape[-2], a_shape[-1], b_shape[-1]


def gemm_label(batch, m, k, n):
    return f"GEMM {m} x {k} x {n}" + (f" (x{batch})" if batch > 1 else "")


# The wrapped functions: (module, name) -> (row label, category, bytes rule). Time inside
# a wrapped function that its GEMMs and wrapped callees do not take is the function's own;
# the bytes rule gives the traffic of that own work (None: the generic moved_bytes).
def _ista_fwd_bytes(args, result):
    x, W = args[0], args[1]
    t, d = x.size, W.shape[0]
    # a -= eta lam, active = a > 0, max(a, 0) in place; M = eta (W - W^T W) + I
    return 4 * t * x.itemsize + t + 4 * d * d * W.itemsize


def _ista_bwd_bytes(args, result):
    dout, (x, W, M, active, eta) = args
    t, d = dout.size, W.shape[0]
    # GA = dout * active; dM + dM^T; dW = dM - ...; dW *= eta
    return 2 * t * dout.itemsize + t + 7 * d * d * W.itemsize


def _rows_copy_bytes(args, result):
    x = args[0]                            # x.reshape(-1, k) copies a strided view
    return 0 if x.flags.c_contiguous else 2 * x.nbytes


def _bias_bytes(args, result):
    return 2 * result[0].nbytes if args[2] is not None else 0


def _bias_grad_bytes(args, result):
    dout, (x, W, has_bias) = args
    return dout.nbytes + result[2].nbytes if has_bias else 0


def _heads_bwd_bytes(args, result):
    w = args[1]["w"]
    B, K, N, p = w.shape
    if fused.enabled():
        return 0                           # dS + dS^T inside the fused loop
    return 3 * B * K * N * N * w.itemsize  # sdS + sdS^T: read twice, write once


def _zero_bytes(args, result):
    model = args[0]
    return sum(g.nbytes for _, m in model.named_modules() for g in m._grads.values())


def _accumulate_bytes(args, result):
    g = args[2]
    return 0 if g is None else 3 * g.nbytes


def _tokens_bytes(args, result):
    return 2 * result.nbytes + args[1].nbytes


WRAPPED = [
    ("whitebox.functional.layernorm", "layernorm_forward", "LayerNorm", "layernorm", None),
    ("whitebox.functional.layernorm", "layernorm_backward", "LayerNorm", "layernorm", None),
    ("whitebox.functional.softmax", "softmax_fast_forward", "softmax", "softmax", None),
    ("whitebox.functional.softmax", "softmax_fast_backward", "softmax", "softmax", None),
    ("whitebox.functional.fused", "attention_scores_backward",
     "softmax + (dS + dS^T) (fused)", "softmax", None),
    ("whitebox.functional.mssa", "_scaled_transpose", "MSSA scale: s w^T copy", "mssa-ew",
     None),
    ("whitebox.functional.mssa", "attention_heads_fast_forward", "MSSA heads (own work)",
     "mssa-ew", lambda a, r: 0),
    ("whitebox.functional.mssa", "attention_heads_fast_backward",
     "MSSA dS + dS^T (own work)", "mssa-ew", _heads_bwd_bytes),
    ("whitebox.functional.mssa", "project_in", "MSSA project in (own work)", "other",
     lambda a, r: 0),
    ("whitebox.functional.mssa", "project_in_backward", "MSSA project in (own work)",
     "other", lambda a, r: 0),
    ("whitebox.functional.mssa", "mssa_fast_forward", "MSSA glue (own work)", "other",
     lambda a, r: 0),
    ("whitebox.functional.mssa", "mssa_fast_backward", "MSSA glue (own work)", "other",
     lambda a, r: 0),
    ("whitebox.functional.ista", "ista_forward", "ISTA threshold + mask (+ M)", "ista-ew",
     _ista_fwd_bytes),
    ("whitebox.functional.ista", "ista_backward", "ISTA mask (+ dW)", "ista-ew",
     _ista_bwd_bytes),
    ("whitebox.functional._blas", "matmul_rows", "head merge / row copies", "copies",
     _rows_copy_bytes),
    ("whitebox.functional.linear", "linear_forward", "bias add", "bias", _bias_bytes),
    ("whitebox.functional.linear", "linear_backward", "bias gradient (sum)", "bias",
     _bias_grad_bytes),
    ("whitebox.functional.patches", "patchify_forward", "patchify (copy)", "patch", None),
    ("whitebox.functional.patches", "patchify_backward", "patchify (copy)", "patch", None),
    ("whitebox.losses", "cross_entropy", "cross-entropy (loss + dlogits)", "loss", None),
]
# Methods: (class path, name, label, category, bytes rule)
WRAPPED_METHODS = [
    ("whitebox.nn.module:Module", "_accumulate", "gradient accumulate (+=)", "grads",
     _accumulate_bytes),
    ("whitebox.nn.module:Module", "zero_grad", "zero_grad (fill)", "grads", _zero_bytes),
    ("whitebox.models._image:ImageModel", "_images", "input check + cast", "patch", None),
    ("whitebox.models._image:ImageModel", "_tokens", "cls token + positions", "patch",
     _tokens_bytes),
    ("whitebox.models._image:ImageModel", "_tokens_backward", "cls token + positions",
     "patch", None),
    ("whitebox.models._image:ImageModel", "_classify", "pool (cls row)", "head", None),
    ("whitebox.models._image:ImageModel", "_classify_backward", "pool (cls row)", "head",
     None),
]
# Functions whose `+` operations are timed as elementwise rows of their own
TIMED_ADDS = [("whitebox.nn.block:ResidualBlock", "forward", "residual add"),
              ("whitebox.nn.block:ResidualBlock", "backward", "residual add")]
GEMM_SITES = {"project_in": "MSSA in", "project_in_backward": "MSSA in",
              "attention_heads_fast_forward": "attention", "attention_heads_fast_backward":
              "attention", "ista_forward": "ISTA", "ista_backward": "ISTA",
              "linear_forward": "linear", "linear_backward": "linear"}


class _Rewrite(ast.NodeTransformer):
    """a @ b and xp.matmul(...) -> timed calls; in ``adds`` mode a + b too."""

    def __init__(self, adds):
        self.adds = adds                   # None, or the name of the timed addition

    def visit_BinOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, ast.MatMult):
            call = ast.Call(ast.Name("_wbprof_matmul", ast.Load()), [node.left, node.right], [])
            return ast.copy_location(call, node)
        if self.adds and isinstance(node.op, ast.Add):
            call = ast.Call(ast.Name(self.adds, ast.Load()), [node.left, node.right], [])
            return ast.copy_location(call, node)
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        if isinstance(node.func, ast.Attribute) and node.func.attr == "matmul":
            node.func = ast.Name("_wbprof_matmul", ast.Load())
        return node


def _resolve(path):
    module, _, cls = path.partition(":")
    mod = sys.modules.get(module) or __import__(module, fromlist=["_"])
    return mod, (getattr(mod, cls) if cls else None)


class StepProfiler:
    """Times whitebox's ops inside a step: ``with prof.installed(): ...`` swaps the
    wrapped functions in (everywhere the package refers to them) and back out.
    ``clock``: time.perf_counter (wall) or time.process_time (CPU; at one thread
    the time other processes take from the step is left out)."""

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.count_work = True             # work is counted in the first step only
        self.phase = "forward"
        self.stack = []                    # [label, child seconds] of open wrapped calls
        self.times = {}                    # key -> seconds in the current step
        self.calls = {}                    # key -> calls in the current step
        self.work = {}                     # key -> FLOPs (GEMMs) or bytes in the current step
        self.meta = {}                     # key -> dict(kind, category, sites)

    # ---- recording
    def _add(self, key, seconds, kind, category, work, site):
        """Add one call: its own seconds, its work (FLOPs or bytes) and where it ran."""
        self.times[key] = self.times.get(key, 0.0) + seconds
        self.calls[key] = self.calls.get(key, 0) + 1
        if self.count_work:
            self.work[key] = self.work.get(key, 0) + work
        meta = self.meta.setdefault(key, dict(kind=kind, category=category, sites=[]))
        if site not in meta["sites"]:
            meta["sites"].append(site)
        if self.stack:
            self.stack[-1][1] += seconds

    def _site(self):
        for _, _, name in reversed(self.stack):
            if name in GEMM_SITES:
                return GEMM_SITES[name]
        return self.stack[-1][2] if self.stack else "model"

    def matmul(self, a, b, *args, **kwargs):
        clock = self.clock
        t = clock()
        out = np.matmul(a, b, *args, **kwargs)
        seconds = clock() - t
        batch, m, k, n = gemm_shape(a, b)
        self._add((PHASES[self.phase], gemm_label(batch, m, k, n)), seconds, "gemm", "gemm",
                  2 * batch * m * k * n, self._site())
        return out

    def adder(self, label, where):
        clock = self.clock

        def add(a, b):
            t = clock()
            out = a + b
            seconds = clock() - t
            work = self.count_work and sum(x.nbytes for x in (a, b, out)
                                           if isinstance(x, np.ndarray))
            self._add((PHASES[self.phase], label), seconds, "ew", "residual", work, where)
            return out
        return add

    def wrap(self, f, label, category, bytes_rule, name):
        prof, clock = self, self.clock
        rule = bytes_rule or moved_bytes

        def timed(*args, **kwargs):
            prof.stack.append([label, 0.0, name])
            t = clock()
            try:
                result = f(*args, **kwargs)
            finally:
                seconds = clock() - t
                _, inner, _ = prof.stack.pop()
            prof._add((PHASES[prof.phase], label), seconds - inner, "ew", category,
                      prof.count_work and rule(args, result), name)
            if prof.stack:                 # the parent's child time is the whole call
                prof.stack[-1][1] += inner
            return result
        timed.__wrapped__ = f
        return timed

    def rewritten(self, f, injected, adds_label=None):
        """f recompiled with its products (and in adds mode its additions) timed. It keeps
        f's module globals, where the timers are put under _wbprof_* names (listed in
        ``injected`` to be taken out again)."""
        src = textwrap.dedent(inspect.getsource(f))
        add_name = "_wbprof_add_" + f.__qualname__.replace(".", "_")
        tree = _Rewrite(add_name if adds_label else None).visit(ast.parse(src))
        tree.body[0].decorator_list = []
        ast.fix_missing_locations(tree)
        env = f.__globals__
        timers = {"_wbprof_matmul": self.matmul}
        if adds_label:
            timers[add_name] = self.adder(adds_label, f.__qualname__)
        for name, timer in timers.items():
            injected.append((env, name))
            env[name] = timer
        ns = {}
        exec(compile(tree, inspect.getsourcefile(f), "exec"), env, ns)
        g = ns[f.__name__]
        g.__defaults__, g.__kwdefaults__ = f.__defaults__, f.__kwdefaults__
        return g

    # ---- installing
    @contextlib.contextmanager
    def installed(self):
        swaps, injected = [], []           # (owner, name, old), (globals, name)
        modules = [m for n, m in list(sys.modules.items())
                   if m is not None and (n == "whitebox" or n.startswith("whitebox."))]
        try:
            for modname, name, label, category, rule in WRAPPED:
                mod, _ = _resolve(modname)
                old = getattr(mod, name)
                new = old
                if not hasattr(old, "py_func"):          # a plain Python function
                    src = inspect.getsource(old)
                    if "@" in src or "matmul(" in src:
                        new = self.rewritten(old, injected)
                new = self.wrap(new, label, category, rule, name)
                for m in modules:
                    for attr, value in list(vars(m).items()):
                        if value is old:
                            swaps.append((m, attr, old))
                            setattr(m, attr, new)
            for path, name, label, category, rule in WRAPPED_METHODS:
                _, cls = _resolve(path)
                old = cls.__dict__[name]
                swaps.append((cls, name, old))
                setattr(cls, name, self.wrap(old, label, category, rule, name))
            for path, name, label in TIMED_ADDS:
                _, cls = _resolve(path)
                old = cls.__dict__[name]
                swaps.append((cls, name, old))
                setattr(cls, name, self.rewritten(old, injected, adds_label=label))
            yield self
        finally:
            for owner, attr, old in reversed(swaps):
                setattr(owner, attr, old)
            for env, name in injected:
                env.pop(name, None)

    # ---- one step
    def step(self, model, x, y):
        """One profiled step; returns (loss, seconds, {key: seconds}). The first step
        also counts each op's work (FLOPs, bytes) into ``self.work``."""
        clock = self.clock
        self.times, self.calls = {}, {}
        t = clock()
        self.phase = "forward"
        logits = model(x)
        self.phase = "loss"
        loss, dlogits = wb.losses.cross_entropy(logits, y)
        self.phase = "zero_grad"
        model.zero_grad()
        self.phase = "backward"
        model.backward(dlogits)
        wall = clock() - t
        self.phase, self.count_work = "forward", False
        return loss, wall, dict(self.times)


# the step as bench_crate times it (same order of calls as StepProfiler.step)
plain_step = bench_crate.whitebox_step


def build_whitebox(name):
    """The float32 CRATE classifier of config ``name`` (seed 0) and its inputs (x, y)."""
    if CONFIGS[name].get("family", "CRATE") != "CRATE":
        raise ValueError(f"config {name!r} is not a CRATE classifier; choose one of "
                         f"{[n for n, c in CONFIGS.items() if 'family' not in c]}")
    return bench_crate.model_and_inputs(name)


def profile_whitebox(name, repeats=5, warmup=2, clock=time.perf_counter, built=None):
    """Per-op medians for whitebox on config ``name``: (rows, step) with
    rows {key: dict(ms, calls, kind, category, flops|bytes, sites)} and step
    dict(plain_ms, wrapped_ms, loss, plain_loss); ``clock`` as StepProfiler's.
    ``built``: build_whitebox(name), when the caller has it already."""
    model, x, y = built or build_whitebox(name)
    prof = StepProfiler(clock)
    plain_losses = [float(plain_step(model, x, y)) for _ in range(warmup)]
    per_step, walls, plains, losses = [], [], [], []
    with prof.installed():
        for _ in range(max(warmup, 1)):
            prof.step(model, x, y)
    for _ in range(repeats):               # alternate plain and wrapped steps
        t = clock()
        plain_losses.append(float(plain_step(model, x, y)))
        plains.append(clock() - t)
        with prof.installed():
            loss, wall, times = prof.step(model, x, y)
        losses.append(float(loss))
        walls.append(wall)
        per_step.append(times)
    if len(set(plain_losses + losses)) != 1:
        raise AssertionError(f"the wrapped step changed the loss: plain {plain_losses}, "
                             f"wrapped {losses}")
    rows = {}
    for key, meta in prof.meta.items():
        ms = 1e3 * statistics.median(s.get(key, 0.0) for s in per_step)
        work = prof.work.get(key, 0)           # the first step's: the same every step
        rows[key] = dict(meta, ms=ms, calls=prof.calls.get(key, 0),
                         flops=work if meta["kind"] == "gemm" else None,
                         bytes=None if meta["kind"] == "gemm" else work)
    step = dict(plain_ms=1e3 * statistics.median(plains),
                wrapped_ms=1e3 * statistics.median(walls), loss=losses[0],
                plain_loss=plain_losses[0])
    return rows, step


# ------------------------------------------------------------------ PyTorch: the profiler

TORCH_CATEGORIES = [
    ("layernorm", "LayerNorm", ("aten::native_layer_norm", "aten::native_layer_norm_backward")),
    ("softmax", "softmax", ("aten::_softmax", "aten::_softmax_backward_data")),
    ("ista-ew", "ReLU / threshold", ("aten::relu", "aten::threshold_backward",
                                     "aten::clamp_min", "aten::gelu", "aten::gelu_backward")),
    ("loss", "cross-entropy", ("aten::_log_softmax", "aten::_log_softmax_backward_data",
                               "aten::nll_loss_forward", "aten::nll_loss_backward",
                               "aten::nll_loss", "aten::nll_loss_nd", "aten::cross_entropy_loss",
                               "aten::log_softmax")),
    ("copies", "copies (copy_, clone, cat)", ("aten::copy_", "aten::clone", "aten::contiguous",
                                             "aten::cat", "aten::_to_copy")),
    ("arith", "mul / add / sub / div", ("aten::mul", "aten::mul_", "aten::add", "aten::add_",
                                          "aten::sub", "aten::div", "aten::rsub", "aten::neg")),
    ("bias", "sum (bias gradients)", ("aten::sum",)),
    ("grads", "zero_ / fill_ (zero_grad)", ("aten::zero_", "aten::fill_")),
]


def _torch_category(name):
    for category, label, names in TORCH_CATEGORIES:
        if name in names:
            return category, label
    if name.startswith(("cpp_fused", "cpp_kernel", "kernel_cpp")) or "fused" in name:
        return "fused", "fused elementwise kernels"
    return "other", "other ops (views, dispatch, graph calls)"


def _torch_gemm_key(name, shapes):
    """(batch, m, k, n) of an aten product from its input shapes, or None."""
    if name not in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"):
        return None
    first = 1 if name in ("aten::addmm", "aten::baddbmm") else 0     # after the added term
    try:
        a, b = shapes[first], shapes[first + 1]
        if name.endswith("bmm"):
            (batch, m, k), (_, _, n) = a, b
            return batch, m, k, n
        (m, k), (_, n) = a, b
        return 1, m, k, n
    except (ValueError, TypeError, IndexError):
        return None


def _is_backward(event):
    e = event
    while e is not None:
        if e.name.startswith("autograd::engine::evaluate_function") or \
                "Backward" in e.name:
            return True
        e = e.cpu_parent
    return False


def profile_torch(torch, module, x, y, repeats, warmup, clock=time.perf_counter):
    """Per-op self CPU ms per step of torch_step(module) under torch.profiler (wall
    time): (rows {key: ...}, step dict(plain_ms, profiled_ms)); the plain steps (no
    profiler) are timed on ``clock``."""
    from torch.profiler import ProfilerActivity, profile

    step = lambda: bench_crate.torch_step(torch, module, x, y)    # noqa: E731
    for _ in range(warmup):
        step()
    plains = []
    for _ in range(repeats):
        t = clock()
        step()
        plains.append(clock() - t)
    with bench_crate.silenced(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            t = time.perf_counter()
            for _ in range(repeats):
                step()
            profiled = (time.perf_counter() - t) / repeats
        events = list(prof.events())
    rows = {}
    for e in events:
        if e.name.startswith(("ProfilerStep", "[memory]")):
            continue
        self_us = e.self_cpu_time_total
        if not self_us:
            continue
        phase = "bwd" if _is_backward(e) else "fwd"
        shape = _torch_gemm_key(e.name, e.input_shapes)
        if shape is not None:
            batch, m, k, n = shape
            key = (phase, gemm_label(batch, m, k, n))
            kind, category, work = "gemm", "gemm", 2 * batch * m * k * n
        else:
            category, label = _torch_category(e.name)
            if phase == "fwd" and category in ("loss", "grads"):
                phase = "loss" if category == "loss" else "zero"   # before the forward
            key = (phase, label)
            kind = "ew"
            work = None if category == "other" else _torch_bytes(e.name, e.input_shapes)
        row = rows.setdefault(key, dict(kind=kind, category=category, ms=0.0, calls=0,
                                        work=0, sites=[]))
        row["ms"] += self_us / 1e3 / repeats
        row["calls"] += 1
        row["work"] += work or 0
        if shape is None and e.name not in row["sites"]:
            row["sites"].append(e.name)
    for row in rows.values():
        row["calls"] = row["calls"] // repeats
        work = row.pop("work") // repeats
        row["flops"] = work if row["kind"] == "gemm" else None
        row["bytes"] = None if row["kind"] == "gemm" or not work else work
    return rows, dict(plain_ms=1e3 * statistics.median(plains), profiled_ms=1e3 * profiled)


def _torch_bytes(name, shapes):
    """Bytes an aten op moves, estimated from its input shapes (float32): its tensor
    inputs read and an output as large as the largest written (copy_: the source read,
    the destination written); None for ops without shapes (generated kernels)."""
    sizes = [int(np.prod(s)) for s in (shapes or []) if isinstance(s, (list, tuple)) and s]
    if not sizes or name.startswith(("cpp_", "graph_")) or name in _VIEWS:
        return None
    if name == "aten::copy_":
        return 4 * 2 * sizes[-1]
    return 4 * (sum(sizes) + max(sizes))


_VIEWS = {"aten::view", "aten::reshape", "aten::transpose", "aten::t", "aten::permute",
          "aten::expand", "aten::as_strided", "aten::_unsafe_view", "aten::_reshape_alias",
          "aten::unsqueeze", "aten::squeeze", "aten::select", "aten::slice", "aten::detach",
          "aten::alias", "aten::empty", "aten::empty_like", "aten::empty_strided",
          "aten::zeros", "aten::matmul", "aten::linear", "aten::contiguous"}


def build_torch(torch, model, x, y, compile_):
    """The eager twin, the compiled folded twin (or a reason it is missing), torch inputs."""
    from whitebox.torch_twins.crate import torch_model_from
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    models = {"eager": torch_model_from(model)}
    notes = {}
    if compile_:
        try:
            from torch._inductor import config as inductor_config
            inductor_config.cpp.enable_kernel_profile = True   # named kernels in the profile
        except (ImportError, AttributeError):
            pass
        try:
            compiled = torch.compile(bench_crate.fold_ista(torch, torch_model_from(model)))
            with bench_crate.silenced():
                bench_crate.torch_step(torch, compiled, tx, ty)
            models["compiled"] = compiled
        except Exception as e:                              # noqa: BLE001 - report, go on
            notes["compiled"] = (f"torch.compile failed: {type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:160]}")
    else:
        notes["compiled"] = "torch.compile left out (--no-compile)"
    return models, tx, ty, notes


# ------------------------------------------------------------------ the table

CATEGORY_ORDER = ["gemm", "layernorm", "softmax", "mssa-ew", "ista-ew", "copies", "bias",
                  "residual", "arith", "grads", "patch", "head", "loss", "fused", "other"]
CATEGORY_LABELS = {
    "gemm": "GEMMs (every shape)", "layernorm": "LayerNorm", "softmax": "softmax",
    "mssa-ew": "MSSA elementwise (s w^T, dS + dS^T)", "ista-ew": "ISTA threshold + mask / ReLU",
    "copies": "copies (head merge, reshapes)", "bias": "bias add + bias gradients",
    "residual": "residual adds", "arith": "elementwise arithmetic (scale, residual, +=)",
    "grads": "zero_grad + gradient accumulate", "patch": "patch embedding, cls, positions",
    "head": "head pooling", "loss": "loss", "fused": "fused elementwise kernels",
    "other": "other (views, dispatch, graph calls)"}
PHASE_ORDER = ["fwd", "loss", "zero", "bwd"]


def _sort_key(key, row):
    return (CATEGORY_ORDER.index(row["category"]), PHASE_ORDER.index(key[0]),
            -(row.get("flops") or 0), key[1])


def summarize(rows, step_ms, plain_ms=None):
    """Add to every row its share of the instrumented step (step_ms); return the totals
    (the ops', the rest of the instrumented step's, and the plain step's)."""
    total = sum(r["ms"] for r in rows.values())
    for r in rows.values():
        r["share"] = r["ms"] / step_ms if step_ms else None
    return dict(total_ms=total, step_ms=step_ms, outside_ms=step_ms - total,
                outside_share=(step_ms - total) / step_ms if step_ms else None,
                plain_ms=plain_ms)


def _rate(row, peak, bandwidth):
    """(rate text, fraction of reference) of one row."""
    if not row["ms"]:
        return "-", None
    if row.get("flops"):
        rate = row["flops"] / (row["ms"] / 1e3)
        return f"{rate / 1e9:.0f} GFLOP/s", rate / peak
    if row.get("bytes"):
        rate = row["bytes"] / (row["ms"] / 1e3)
        return f"{rate / 1e9:.1f} GB/s", rate / bandwidth
    return "-", None


def _work(row):
    if row.get("flops"):
        return f"{row['flops'] / 1e6:.1f} MFLOP"
    if row.get("bytes"):
        return f"{row['bytes'] / 2**20:.1f} MiB"
    return "-"


def table(results, refs, columns):
    """Markdown lines: one row per (phase, op), the columns of each contender beside."""
    keys = {}
    for c in columns:
        for k, r in results[c]["rows"].items():
            keys.setdefault(k, r)
    head = "| op | phase | where (whitebox; else aten) | work (calls) |"
    rule = "|---|---|---|---|"
    for c in columns:
        head += f" {c} ms | {c} rate | {c} % ref | {c} share |"
        rule += "---|---|---|---|"
    lines = [head, rule]

    def cells(c, row):
        if row is None:
            return " - | - | - | - |"
        rate, frac = _rate(row, refs[c]["peak"], refs[c]["bandwidth"])
        return (f" {row['ms']:.2f} | {rate} | " + ("-" if frac is None else f"{100 * frac:.0f}%")
                + f" | {100 * row['share']:.1f}% |")

    def work(key):
        """The work of the first contender with the row; the others' where it differs."""
        texts = [(c, _work(results[c]["rows"][key]) + f" ({results[c]['rows'][key]['calls']})")
                 for c in columns if key in results[c]["rows"]]
        first = texts[0][1]
        return first + "".join(f"; {c} {w}" for c, w in texts[1:]
                               if w != first and not w.startswith("- "))

    for key in sorted(keys, key=lambda k: _sort_key(k, keys[k])):
        row0 = keys[key]
        wbrow = results["whitebox"]["rows"].get(key)
        sites = ", ".join((wbrow or row0).get("sites", [])[:3]) or "-"
        line = f"| {key[1]} | {key[0]} | {sites} | {work(key)} |"
        for c in columns:
            line += cells(c, results[c]["rows"].get(key))
        lines.append(line)
    return lines + totals_rows(results, columns, (
        ("total of ops", "total_ms"),
        ("outside the ops (Python, allocation, glue, the timers)", "outside_ms"),
        ("whole step measured, instrumented", "step_ms"),
        ("whole step measured, plain (no timers, no profiler)", "plain_ms")),
        lead=" | | |", skip=" | |")


def totals_rows(results, columns, fields, lead="", skip=""):
    """Bold markdown rows, one per (label, field): each contender's totals[field] in ms and
    its share of the instrumented step; ``lead`` and ``skip`` are the empty cells after the
    label and between the two numbers."""
    lines = []
    for label, field in fields:
        line = f"| **{label}** |{lead}"
        for c in columns:
            t = results[c]["totals"]
            line += f" {t[field]:.1f} |{skip} {100 * t[field] / t['step_ms']:.1f}% |"
        lines.append(line)
    return lines


def category_table(results, columns):
    """Markdown lines: the rows summed by category, each contender's ms and share."""
    head = "| category |" + "".join(f" {c} ms | {c} share |" for c in columns)
    lines = [head, "|---|" + "---|---|" * len(columns)]
    sums = {c: {} for c in columns}
    for c in columns:
        for r in results[c]["rows"].values():
            sums[c][r["category"]] = sums[c].get(r["category"], 0.0) + r["ms"]
    for cat in CATEGORY_ORDER:
        if not any(cat in sums[c] for c in columns):
            continue
        line = f"| {CATEGORY_LABELS[cat]} |"
        for c in columns:
            ms, step = sums[c].get(cat), results[c]["totals"]["step_ms"]
            line += " - | - |" if ms is None else f" {ms:.1f} | {100 * ms / step:.1f}% |"
        lines.append(line)
    return lines + totals_rows(results, columns, (("outside the ops", "outside_ms"),
                                                  ("whole step, instrumented", "step_ms"),
                                                  ("whole step, plain", "plain_ms")))


def gemm_flops_total(rows):
    return sum(r["flops"] for r in rows.values() if r.get("flops"))


def fused_state():
    if not fused.available():
        return 'Numba not installed: NumPy only (pip install "whitebox-crate[fast]")'
    return f"on (Numba {fused.numba.__version__})" if fused.enabled() else "switched off"


def profile_config(name, torch, nthreads, repeats, warmup, compile_, clock=time.perf_counter):
    """Every contender's rows and totals for one config."""
    results, notes = {}, {}
    with threads.limited(nthreads):
        built = build_whitebox(name)       # profiling leaves the weights as they are
        rows, step = profile_whitebox(name, repeats, warmup, clock, built)
        totals = summarize(rows, step["wrapped_ms"], step["plain_ms"])
        results["whitebox"] = dict(rows=rows, totals=totals, step=step)
        if torch is not None:
            torch.set_num_threads(nthreads)
            models, tx, ty, notes = build_torch(torch, *built, compile_)
            for c, m in models.items():
                rows, step = profile_torch(torch, m, tx, ty, repeats, warmup, clock)
                totals = summarize(rows, step["profiled_ms"], step["plain_ms"])
                results[c] = dict(rows=rows, totals=totals, step=step)
    return results, notes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    crate_configs = [n for n, c in CONFIGS.items() if "family" not in c]
    ap.add_argument("--configs", nargs="+", default=["cifar-crate-t"], choices=crate_configs)
    ap.add_argument("--threads", type=int, default=1, help="BLAS and PyTorch threads")
    ap.add_argument("--repeats", type=int, default=5, help="profiled steps (median)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-fused", action="store_true", help="switch the fused loops off")
    ap.add_argument("--no-torch", action="store_true", help="whitebox alone")
    ap.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="whitebox's timers: wall time, or CPU time (process_time; one "
                         "thread only), which other processes disturb far less")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        ap.error(f"--clock cpu needs --threads 1 (got --threads {args.threads}): the CPU "
                 "time of several threads is not the time a step takes")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.no_fused and fused.available():
        fused.set_enabled(False)
    warn_if_loaded()
    kept = memory.keep_freed_memory()
    torch, torch_note = None, "left out (--no-torch)"
    if not args.no_torch:
        torch = bench_crate.load_torch()
        if torch is None:
            torch_note = bench_crate.TORCH_MISSING
    peaks = {}
    with threads.limited(args.threads):
        peaks["whitebox"] = bench_crate.blas_peak(np, clock=clock)
        if torch is not None:
            torch.set_num_threads(args.threads)
            peaks["eager"] = peaks["compiled"] = bench_crate.torch_gemm_rate(torch)
        big = copy_bandwidth(64 * 2**20, clock=clock)
    state = machine_state()
    out = {"threads": args.threads, "clock": args.clock, "machine": state, "fused": fused_state(),
           "gemm_peak": peaks, "copy_64MiB": big, "configs": {}}
    for name in args.configs:
        size = token_bytes(name)
        with threads.limited(args.threads):
            bandwidth = {"whitebox": copy_bandwidth(size, clock=clock)}
            if torch is not None:       # one measurement for eager and compiled alike
                bandwidth["eager"] = bandwidth["compiled"] = copy_bandwidth(size, torch)
            refs = {c: dict(peak=p, bandwidth=bandwidth[c]) for c, p in peaks.items()}
        results, notes = profile_config(name, torch, args.threads, args.repeats, args.warmup,
                                        not args.no_compile, clock)
        columns = [c for c in CONTENDERS if c in results]
        wb_rows = results["whitebox"]["rows"]
        print(f"\n### {name}: one float32 training step, op by op "
              f"(batch {CONFIGS[name]['batch']}, {args.threads} thread(s), median of "
              f"{args.repeats})")
        print(f"machine at start: {state}; fused loops: {fused_state()}; malloc: "
              + ("freed memory kept" if kept else "default thresholds")
              + ("; whitebox timed by CPU time (its references too), PyTorch's profiler "
                 "by wall time (its plain step by CPU time)"
                 if args.clock == "cpu" else "; wall time"))
        print(f"references: NumPy 2048^3 GEMM {refs['whitebox']['peak'] / 1e9:.0f} GFLOP/s; "
              f"np.copyto of the token array ({size / 2**20:.1f} MiB) "
              f"{refs['whitebox']['bandwidth'] / 1e9:.1f} GB/s, one thread (of 64 MiB: "
              f"{big / 1e9:.1f} GB/s)"
              + (f"; PyTorch GEMM {refs['eager']['peak'] / 1e9:.0f} GFLOP/s, copy_ of the "
                 f"token array {refs['eager']['bandwidth'] / 1e9:.1f} GB/s"
                 if "eager" in refs else ""))
        if args.threads > 1:
            print(f"{args.threads} BLAS threads in one step; training with --threads "
                  f"{args.threads} runs {args.threads} one-thread shards instead "
                  "(bench_crate.py times that step)")
        step = results["whitebox"]["step"]
        print(f"whitebox: plain step {step['plain_ms']:.1f} ms, with the timers "
              f"{step['wrapped_ms']:.1f} ms (shares of this one); loss {step['loss']:.6f} = plain step's; "
              f"GEMM FLOPs {gemm_flops_total(wb_rows) / 1e9:.3f} G (bench_crate counts "
              f"{gemm_flops(CONFIGS[name]) / 1e9:.3f} G)")
        for c in ("eager", "compiled"):
            if c in results:
                s = results[c]["step"]
                print(f"{c}: step {s['plain_ms']:.1f} ms, under the profiler "
                      f"{s['profiled_ms']:.1f} ms (self CPU times; shares of the profiled step)")
            elif torch is None:
                print(f"{c}: {torch_note}")
            elif c in notes:
                print(f"{c}: {notes[c]}")
        print("% ref = rate against the same run's GEMM peak (GEMMs) or token-array copy "
              "(the rest); work = FLOPs or bytes read + written per step (PyTorch's bytes "
              "estimated from the aten inputs' shapes), with the calls per step\n")
        print("\n".join(table(results, refs, columns)))
        print("\nthe same by category\n")
        print("\n".join(category_table(results, columns)), flush=True)
        out["configs"][name] = {c: dict(rows=[dict(phase=k[0], op=k[1], **r)
                                              for k, r in v["rows"].items()],
                                        totals=v["totals"], step=v["step"])
                                for c, v in results.items()}
        out["configs"][name]["notes"] = notes
        out["configs"][name]["refs"] = refs
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
