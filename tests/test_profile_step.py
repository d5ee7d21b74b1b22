"""benchmarks/profile_step.py: the op-by-op profile of a whitebox training step counts every
GEMM once, times every op, leaves the step's results unchanged and puts the functions back."""
import numpy as np
import pytest

import whitebox.functional as F
from whitebox.functional import fused, mssa
from whitebox.nn.block import ResidualBlock

from conftest import load_script

TINY = dict(image_size=8, patch_size=4, channels=1, num_classes=3, dim=8, depth=2, heads=2,
            dim_head=4, batch=4)


@pytest.fixture(scope="module")
def prof():
    script = load_script("benchmarks/profile_step.py")
    script.CONFIGS["tiny"] = TINY          # the script's CONFIGS is bench_crate's dict
    yield script
    del script.CONFIGS["tiny"]


def independent_gemm_flops(c):
    """FLOPs of every product of the step, written out per product from the shapes."""
    B, d, K, p, C = c["batch"], c["dim"], c["heads"], c["dim_head"], c["num_classes"]
    n = (c["image_size"] // c["patch_size"]) ** 2
    N, P = n + 1, c["channels"] * c["patch_size"] ** 2
    T, I = B * N, K * p

    def mm(m, k, nn, batch=1):
        return 2 * batch * m * k * nn
    linear = lambda rows, i, o: mm(rows, i, o) + mm(rows, o, i) + mm(o, rows, i)  # noqa: E731
    layer = (linear(T, d, I)                                         # qkv: x W^T, dx, dW
             + linear(T, I, d)                                       # to_out
             + mm(N, p, N, B * K) + mm(N, N, p, B * K)               # S = w s w^T, A w
             + mm(N, N, p, B * K) + mm(N, p, N, B * K) + mm(N, N, p, B * K)  # A^T dH, dA, dS w
             + mm(d, d, d) + mm(T, d, d)                             # W^T W, x M
             + mm(T, d, d) + mm(d, T, d) + mm(d, d, d))              # dx, dM, W (dM + dM^T)
    return c["depth"] * layer + linear(B * n, P, d) + linear(B, d, C)


@pytest.mark.parametrize("use_fused", [True, False])
def test_whitebox_rows(prof, use_fused):
    if use_fused and not fused.available():
        pytest.skip("Numba is not installed")
    originals = (F.layernorm_forward, mssa.attention_heads_fast_backward,
                 mssa.matmul_rows, ResidualBlock.forward)
    with fused.setting(use_fused):
        rows, step = prof.profile_whitebox("tiny", repeats=2, warmup=1)
    assert (F.layernorm_forward, mssa.attention_heads_fast_backward, mssa.matmul_rows,
            ResidualBlock.forward) == originals                 # everything put back
    assert step["loss"] == step["plain_loss"]                    # checked inside too
    totals = prof.summarize(rows, step["wrapped_ms"], step["plain_ms"])
    assert all(r["ms"] > 0 for r in rows.values())
    assert all(r["calls"] > 0 for r in rows.values())
    gemms = [r for r in rows.values() if r["kind"] == "gemm"]
    flops = sum(r["flops"] for r in gemms)
    assert flops == independent_gemm_flops(TINY) == prof.gemm_flops(TINY)
    # the ops the profile promises are there, in the phases they run in
    ops = {(phase, op) for phase, op in rows}
    for key in [("fwd", "LayerNorm"), ("bwd", "LayerNorm"), ("fwd", "softmax"),
                ("fwd", "MSSA scale: s w^T copy"), ("fwd", "ISTA threshold + mask (+ M)"),
                ("bwd", "ISTA mask (+ dW)"), ("fwd", "residual add"), ("bwd", "residual add"),
                ("loss", "cross-entropy (loss + dlogits)"), ("fwd", "patchify (copy)"),
                ("fwd", "GEMM 4 x 8 x 3"), ("fwd", "GEMM 5 x 4 x 5 (x8)")]:
        assert key in ops, key
    assert ("bwd", "softmax + (dS + dS^T) (fused)" if use_fused else "softmax") in ops
    shares = sum(r["share"] for r in rows.values()) + totals["outside_share"]
    assert shares == pytest.approx(1.0)
    assert totals["total_ms"] == pytest.approx(sum(r["ms"] for r in rows.values()))
    # LayerNorm forward: per call reads x, gamma, beta and writes y, xhat, rstd
    ln_calls = [(16, 16), (16, 8)] + [(20, 8)] * 2 * TINY["depth"] + [(4, 8)]   # (rows, width)
    assert rows[("fwd", "LayerNorm")]["bytes"] == sum(4 * (3 * r * w + 2 * w + r)
                                                      for r, w in ln_calls)
    assert rows[("fwd", "LayerNorm")]["calls"] == len(ln_calls)


def test_layernorm_bytes_by_hand(prof):
    x, g, b = (np.ones((6, 8), np.float32), np.ones(8, np.float32), np.zeros(8, np.float32))
    out = F.layernorm_forward(x, g, b)
    # reads x, gamma, beta; writes y, xhat, rstd
    assert prof.moved_bytes((x, g, b), out) == 4 * (48 + 8 + 8 + 48 + 48 + 6)
    y, _ = F.softmax_fast_forward(np.ones((3, 4), np.float32))
    assert prof.moved_bytes((y,), (y, y)) == 2 * y.nbytes          # in place: read + write


def test_main_without_torch(prof, capsys, tmp_path):
    out = prof.main(["--configs", "tiny", "--no-torch", "--repeats", "1", "--warmup", "1",
                     "--clock", "cpu", "--json", str(tmp_path / "rows.json")])
    text = capsys.readouterr().out
    assert "| **total of ops** |" in text
    assert "| **whole step measured, plain (no timers, no profiler)** |" in text
    assert "whitebox timed by CPU time" in text
    assert "eager: left out (--no-torch)" in text
    assert (tmp_path / "rows.json").exists()
    assert set(out["configs"]["tiny"]) >= {"whitebox", "notes", "refs"}


def test_torch_eager_rows(prof):
    torch = pytest.importorskip("torch")
    model, x, y = prof.build_whitebox("tiny")
    models, tx, ty, notes = prof.build_torch(torch, model, x, y, compile_=False)
    assert "compiled" in notes and "eager" in models
    rows, step = prof.profile_torch(torch, models["eager"], tx, ty, repeats=1, warmup=1)
    assert step["profiled_ms"] > 0
    gemms = {k: r for k, r in rows.items() if r["kind"] == "gemm"}
    # the official twin: three ISTA products of T x d x d per layer in the forward
    T, d = TINY["batch"] * 5, TINY["dim"]
    assert gemms[("fwd", f"GEMM {T} x {d} x {d}")]["calls"] >= 3 * TINY["depth"]
    assert ("fwd", "GEMM 5 x 4 x 5 (x8)") in gemms                 # the heads' scores
    assert {("fwd", "LayerNorm"), ("bwd", "LayerNorm"), ("fwd", "softmax"),
            ("bwd", "softmax")} <= set(rows)
    assert all(r["ms"] >= 0 for r in rows.values())


def test_cpu_clock_needs_one_thread(prof, capsys):
    with pytest.raises(SystemExit):
        prof.main(["--configs", "tiny", "--no-torch", "--clock", "cpu", "--threads", "2"])
    assert "--clock cpu needs --threads 1" in capsys.readouterr().err
