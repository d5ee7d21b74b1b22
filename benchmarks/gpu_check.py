"""The whole GPU story in one command: tests, step benchmarks, a short training run.

    python benchmarks/gpu_check.py

On a machine with CuPy and a CUDA device it runs, within about 8 minutes:
  1. the `gpu`-marked tests (`pytest -m gpu`);
  2. the float32 training-step benchmark of every model family in
     whitebox.models against PyTorch on CUDA: CRATE and CRATE-alpha through
     benchmarks/bench_crate.py (eager, and `torch.compile` of the same folded
     model where it works), CRATE-MAE through bench_mae.py and the language
     models through bench_lm.py (their tables are printed as they come);
  3. a short CRATE training run on the GPU
     (`python -m whitebox.train --backend cupy ...`) and its held-out accuracy;
and prints one table. Where CuPy or a device is missing it says so and exits 0.
Each part has its own time limit (--budget splits it), so one slow part
cannot take the others' time.
"""
import argparse
import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Benchmark configs per model family of whitebox.models (names in bench_crate.CONFIGS).
FAMILY_CONFIGS = {"CRATE": ["mnist-demo", "cifar-crate-t", "crate-t-224"],
                  "CRATEAlpha": ["alpha-tiny"]}
# Families timed by their own benchmark script, whose table is printed as it comes.
FAMILY_SCRIPTS = {"CRATEMAE": ["bench_mae.py"],
                  "CRATEGPT": ["bench_lm.py", "--variant", "overcomplete"]}
# Families with no step of their own to time.
NO_STEP = {"ReduNet": "built layer by layer without backpropagation: no training step",
           "CRATEBERT": "CRATEGPT's blocks without the causal mask: see the CRATEGPT table"}
TRAIN_ARGS = ["--backend", "cupy", "--epochs", "5", "--batch-size", "128", "--no-figures",
              "--no-progress"]


def gpu_status():
    """(True, device name) where CuPy sees a CUDA device, else (False, why not)."""
    from whitebox import backend
    if importlib.util.find_spec("cupy") is None:
        return False, "CuPy is not installed (pip install 'whitebox-crate[gpu]')"
    if not backend.gpu_available():
        return False, "CuPy is installed but no CUDA device answers"
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return True, name


def pytest_summary(text):
    """The counts of pytest's last line, e.g. '12 passed, 3 skipped'."""
    counts = re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed)", text)
    return ", ".join(f"{n} {what}" for n, what in counts if what != "deselected") or \
        "no summary (see output above)"


def held_out_accuracy(text):
    """The final 'test accuracy: XX.X%' of a training run, or None."""
    found = re.findall(r"test accuracy:\s*([\d.]+)%", text)
    return float(found[-1]) if found else None


def run_tests(limit):
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
           str(ROOT / "tests")]
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, cwd=ROOT)
        text, status = r.stdout + r.stderr, ("ok" if r.returncode in (0, 5) else "FAILED")
    except subprocess.TimeoutExpired as e:
        text, status = (e.stdout or b"").decode(errors="replace"), f"timed out after {limit} s"
    return [("tests", "pytest -m gpu", pytest_summary(text), "", "", status,
             time.perf_counter() - t)], text


def run_benchmarks(limit):
    """One row per config of every family; families without configs say so."""
    import whitebox.models as models
    from whitebox.nn import Module
    spec = importlib.util.spec_from_file_location("bench_crate", ROOT / "benchmarks" /
                                                  "bench_crate.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    torch = bench.load_torch()
    if torch is not None and not torch.cuda.is_available():
        print("PyTorch has no CUDA here: its columns are left empty")
        torch = None
    peak = bench.blas_peak(__import__("cupy"))
    families = [n for n in getattr(models, "__all__", dir(models))
                if isinstance(getattr(models, n), type) and issubclass(getattr(models, n), Module)]
    rows, tables, start = [], [], time.perf_counter()
    for family in families:
        if family in FAMILY_SCRIPTS:
            rows.append(run_script(family, FAMILY_SCRIPTS[family],
                                   limit - (time.perf_counter() - start), tables))
            continue
        configs = FAMILY_CONFIGS.get(family)
        if not configs:
            rows.append(("step", family, NO_STEP.get(family, "no benchmark config yet"), "",
                         "", "skipped", 0.0))
            continue
        for name in configs:
            if time.perf_counter() - start > limit:
                rows.append(("step", f"{family} {name}", "", "", "", "skipped: time budget",
                             0.0))
                continue
            t = time.perf_counter()
            try:
                r = bench.bench(name, "cupy", torch, 1, 20, 3, torch is not None, peak)
                ms = r["ms"]
                no_torch = "no torch (CUDA)" if torch is None else "failed"
                rows.append(("step", f"{family} {name} B={r['batch']}",
                             f"{ms['whitebox']:.2f} ms",
                             f"{ms['eager']:.2f} ms" if "eager" in ms else no_torch,
                             f"{ms['compiled']:.2f} ms" if "compiled" in ms else no_torch,
                             f"ok; {bench.pct(r['peak'], 'whitebox', '-')} of GEMM peak, "
                             f"{r['mem_wb']:.0f} MiB", time.perf_counter() - t))
            except Exception as e:                        # noqa: BLE001 - report, go on
                rows.append(("step", f"{family} {name}", "", "", "",
                             f"FAILED: {type(e).__name__}: {str(e)[:120]}",
                             time.perf_counter() - t))
    for name, text in tables:
        print(f"\n--- {name} ---\n{text}")
    return rows


def run_script(family, script, limit, tables):
    """Run a family's own benchmark script on CuPy; its table goes to ``tables``."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / script[0]), *script[1:],
           "--backend", "cupy"]
    t = time.perf_counter()
    if limit <= 0:
        return ("step", family, "", "", "", "skipped: time budget", 0.0)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, cwd=ROOT)
        status = "ok; table below" if r.returncode == 0 else f"FAILED (exit {r.returncode})"
        tables.append((f"{family}: {' '.join(script)}", (r.stdout + r.stderr).strip()))
    except subprocess.TimeoutExpired:
        status = f"timed out after {limit:.0f} s"
    return ("step", f"{family} ({script[0]})", "", "", "", status, time.perf_counter() - t)


def run_training(limit):
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "whitebox.train", *TRAIN_ARGS, "--out", out]
        t = time.perf_counter()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, cwd=ROOT)
            text = r.stdout + r.stderr
            status = "ok" if r.returncode == 0 else f"FAILED (exit {r.returncode})"
        except subprocess.TimeoutExpired as e:
            text, status = (e.stdout or b"").decode(errors="replace"), \
                f"timed out after {limit} s"
    acc = held_out_accuracy(text)
    label = "python -m whitebox.train " + " ".join(TRAIN_ARGS)
    return [("train", label, "" if acc is None else f"held-out acc {acc:.1f}%", "", "", status,
             time.perf_counter() - t)], text


def print_table(device, rows):
    print(f"\nGPU check on {device}")
    print("| part | what | whitebox | PyTorch eager | torch.compile (folded) | status | s |")
    print("|---|---|---|---|---|---|---|")
    for part, what, wb, eager, comp, status, secs in rows:
        print(f"| {part} | {what} | {wb} | {eager} | {comp} | {status} | {secs:.0f} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=450,
                    help="seconds in all (tests 30%%, benchmarks 40%%, training 30%%)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    ok, device = gpu_status()
    if not ok:
        print(f"No GPU check here: {device}. Nothing was run.")
        return 0
    rows, logs = [], []
    tests, text = run_tests(0.3 * args.budget)
    rows += tests
    logs.append(("pytest -m gpu", text))
    rows += run_benchmarks(0.4 * args.budget)
    training, text = run_training(0.3 * args.budget)
    rows += training
    logs.append(("training run", text))
    for name, text in logs:                  # the details of anything that went wrong
        if "FAILED" in text or "Error" in text:
            print(f"\n--- {name}: last lines ---\n" + "\n".join(text.splitlines()[-25:]))
    print_table(device, rows)
    return 0 if all(r[5].startswith(("ok", "skipped")) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
