"""benchmarks/bench_crate.py: the folded PyTorch model is the same model, FLOPs count right,
and the table says so when PyTorch is missing."""
import numpy as np
import pytest

from whitebox.functional import fused
from whitebox.models import CRATE

from conftest import load_script



@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/bench_crate.py")


def test_folded_torch_model_equals_the_official_one(bench):
    torch = pytest.importorskip("torch")
    from whitebox.torch_twins.crate import torch_model_from
    model = CRATE(image_size=8, patch_size=4, num_classes=3, dim=8, depth=2, heads=2,
                  dim_head=4, channels=1, dtype="float64", seed=0)
    x = torch.from_numpy(np.random.default_rng(1).random((2, 1, 8, 8)))
    y = torch.tensor([0, 2])
    official, folded = torch_model_from(model), bench.fold_ista(torch, torch_model_from(model))
    for m in (official, folded):
        torch.nn.functional.cross_entropy(m(x), y).backward()
    torch.testing.assert_close(folded(x), official(x), rtol=1e-12, atol=1e-12)
    for (name, a), (_, b) in zip(official.named_parameters(), folded.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_gemm_flops_by_hand(bench):
    cfg = dict(image_size=8, patch_size=4, channels=1, num_classes=3, dim=8, depth=1,
               heads=2, dim_head=4, batch=2)
    T, N, d, I, K, p = 2 * 5, 5, 8, 8, 2, 4
    layer_common = 12 * T * d * I + 10 * 2 * K * N * N * p
    ends = 6 * 2 * 4 * 16 * d + 6 * 2 * d * 3
    assert bench.gemm_flops(cfg) == layer_common + 6 * T * d * d + 4 * d ** 3 + ends
    assert bench.gemm_flops(cfg, folded=False) == layer_common + 18 * T * d * d + ends


TINY = dict(image_size=8, patch_size=4, channels=1, num_classes=3, dim=8, depth=1, heads=2,
            dim_head=4, batch=2)


def tiny_without_torch(bench, monkeypatch, **changes):
    """"mnist-demo" made tiny, and PyTorch missing as far as the benchmark can tell."""
    monkeypatch.setattr(bench, "load_torch", lambda: None)
    monkeypatch.setitem(bench.CONFIGS, "mnist-demo", dict(TINY, **changes))


def test_table_says_when_torch_is_missing(bench, monkeypatch, capsys):
    tiny_without_torch(bench, monkeypatch)
    rows = bench.main(["--configs", "mnist-demo", "--threads", "1", "--repeats", "1",
                       "--warmup", "0", "--gemm-size", "256", "--cpu-time"])
    out = capsys.readouterr().out
    assert "PyTorch is not installed" in out and "download.pytorch.org/whl/cpu" in out
    table = [line for line in out.splitlines() if line.startswith("| mnist-demo")]
    assert len(table) == 1 and "no torch" in table[0] and " - " not in table[0]
    assert rows[0]["ms"]["whitebox"] > 0


def test_beside_busy_times_whitebox_alone_idle_and_loaded(bench, monkeypatch, capsys):
    tiny_without_torch(bench, monkeypatch, batch=4)          # two shards of two
    rows = bench.main(["--configs", "mnist-demo", "--threads", "2", "--repeats", "1",
                       "--warmup", "0", "--gemm-size", "64", "--beside-busy"])
    quiet, busy = rows[0]["beside_busy"]
    assert set(quiet) == set(busy) == set(rows[0]["ms"]) and all(v > 0 for v in busy.values())
    out = capsys.readouterr().out
    assert "beside one busy process" in out
    line = [s for s in out.splitlines() if s.startswith("| mnist-demo")][-1]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert float(cells[3]) == pytest.approx(busy["whitebox"] / quiet["whitebox"], abs=0.006)


def test_every_config_runs_against_its_torch_twin(bench, monkeypatch, capsys):
    pytest.importorskip("torch")
    monkeypatch.setitem(bench.CONFIGS, "mnist-demo", TINY)
    monkeypatch.setitem(bench.CONFIGS, "alpha-tiny", dict(TINY, family="CRATE-alpha"))
    rows = bench.main(["--configs", "mnist-demo", "alpha-tiny", "--threads", "1", "--repeats",
                       "1", "--warmup", "0", "--gemm-size", "64", "--no-compile"])
    assert [sorted(r["ms"]) for r in rows] == [["eager", "whitebox"]] * 2
    assert rows[0]["peak"]["whitebox"] > 0 and rows[1]["peak"]["whitebox"] is None
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| alpha")]
    assert "n/a" in table[0]


def test_whitebox_runner_with_two_workers_gives_the_one_thread_gradients(bench):
    """The benchmark times training's shard step, and that step computes the same gradients."""
    model = CRATE(image_size=8, patch_size=4, num_classes=3, dim=8, depth=1, heads=2,
                  dim_head=4, channels=1, dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.random((5, 1, 8, 8)), np.array([0, 1, 2, 0, 1])
    bench.whitebox_runner(model, x, y, 1)()
    whole = {k: v.copy() for k, v in model.grads().items()}
    loss = bench.whitebox_runner(model, x, y, 2)()
    assert np.isfinite(float(loss))
    for k, g in model.grads().items():
        np.testing.assert_allclose(g, whole[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_bench_shards_prints_its_table(capsys):
    rows = load_script("benchmarks/bench_shards.py").main(["--models", "quickstart", "--repeats", "1"])
    out = capsys.readouterr().out
    # the machine as it is: "idle" only when its load average says so
    assert rows[0][1].startswith(("idle (load", "LOADED (load", "load unknown"))
    assert rows[1][1] == "one busy process"
    assert out.count("| Quickstart (d 96, L 4, patch 7) |") == 2
    assert all(set(r[2]) == {"1 thread", "2 shards", "2 BLAS threads"} for r in rows)


def test_bench_layernorm_prints_its_table(capsys):
    load_script("benchmarks/bench_layernorm.py").main(["--repeats", "1"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| mnist-demo")]
    assert len(rows) == 1 and rows[0].count("|") == 8
    assert ("Numba not installed" in rows[0]) != fused.available()
    assert not fused.enabled()                     # the suite's setting is back


def test_benchmarks_say_when_the_machine_is_loaded(monkeypatch, capsys):
    common = load_script("benchmarks/_common.py")
    monkeypatch.setattr(common.os, "getloadavg", lambda: (4.0, 4.0, 4.0))
    monkeypatch.setattr(common, "cores", lambda: 2)
    assert common.machine_state() == "LOADED (load 4.0, 2 cores)"      # not "idle"
    assert common.warn_if_loaded() == "LOADED (load 4.0, 2 cores)"
    assert "busy (load average 4.0 on 2 cores)" in capsys.readouterr().err
    monkeypatch.setattr(common.os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    assert common.machine_state() == "idle (load 0.2, 2 cores)"
    common.warn_if_loaded()
    assert capsys.readouterr().err == ""


def test_bench_shards_takes_short_model_names():
    shards = load_script("benchmarks/bench_shards.py")
    assert shards.model_name("mnist-demo") == "mnist-demo"
    assert shards.model_name("Quickstart (d 96, L 4, patch 7)") == "quickstart"
    with pytest.raises(SystemExit):
        shards.main(["--models", "resnet"])


def test_one_busy_process_runs_inside_the_block_only():
    common = load_script("benchmarks/_common.py")
    with common.one_busy_process() as busy:
        assert busy.poll() is None                    # running
    assert busy.poll() is not None                    # killed and reaped
