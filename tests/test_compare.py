"""whitebox.compare: width matching, the plan and its skip logic, compare.json's schema,
the ablation hybrids; the whole command on a tiny classify run (slow)."""
import json
import os

import numpy as np
import pytest

import whitebox as wb
from whitebox import compare as C
from whitebox.gradcheck import check_module
from whitebox.models import CRATE

SCHEMA = {"rows": {"task", "model", "params", "metric", "mean", "std", "seconds_per_step",
                   "seeds"},
          "layers": {"task", "model", "layer", "compression_rc", "sparsity"},
          "ablation": {"attention", "mlp", "params", "mean", "std", "miou"},
          "segmentation": {"model", "miou", "best_heads"}}


def test_match_width_finds_the_nearest_count():
    def count(d):
        return 12 * d * d + 100

    d, n = C.match_width(count, 12 * 48 * 48 + 100 + 30, step=4, largest=400)
    assert d == 48 and n == count(48)
    d, n = C.match_width(count, count(50) - 1, step=2, largest=400)
    assert d == 50


def test_match_width_refuses_what_no_width_matches():
    with pytest.raises(ValueError, match="within 10%"):
        C.match_width(lambda d: 1000 * d, 1500, step=1, largest=100)   # 1000 or 2000
    with pytest.raises(ValueError, match="within 10%"):
        C.match_width(lambda d: d, 10_000, step=1, largest=100)        # never that large


class StubCounter:
    """Counts that make every model match: each model's count is its width squared."""

    class Opt:
        dim, heads = 32, 2

    def __call__(self, task, settings):
        return settings.get("dim", 32) ** 2

    def options(self, task):
        return self.Opt

    def extra(self, task):
        return {}


def test_plan_pairs_seeds_and_folders(tmp_path):
    jobs = C.plan(["classify", "lm"], [0, 1], str(tmp_path), StubCounter(), verbose=False)
    names = [(j.task, j.model) for j in jobs[::2]]
    assert names == [("classify", "crate"), ("classify", "vit"), ("classify", "mssa+mlp"),
                     ("classify", "mhsa+ista"), ("classify", "mhsa+mlp"), ("lm", "crate"),
                     ("lm", "gpt")]
    assert len({j.out for j in jobs}) == len(jobs) == 14
    ablation = {j.ablation for j in jobs if j.ablation}
    assert ablation == set(C.ABLATION)
    vit = next(j for j in jobs if j.model == "vit")
    assert vit.settings == dict(model="vit", dim=32) and vit.params == 32 ** 2
    mixed = next(j for j in jobs if j.model == "mssa+mlp")
    assert mixed.settings["dim_head"] == 16 and mixed.settings["mlp"] == "mlp"


def _fake_run(out, epochs, done, run_id="r1"):
    os.makedirs(out)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(dict(epochs=epochs, run_id=run_id), f)
    with open(os.path.join(out, "checkpoint.npz"), "wb") as f:
        f.write(b"x")
    with open(os.path.join(out, "metrics.jsonl"), "w") as f:
        for e in range(1, done + 1):
            f.write(json.dumps(dict(epoch=e, run=run_id, test_acc=0.5)) + "\n")


def test_state_tells_done_partial_and_new(tmp_path, monkeypatch):
    _fake_run(str(tmp_path / "done"), 3, 3)
    _fake_run(str(tmp_path / "half"), 3, 1)
    assert C.state(str(tmp_path / "done")) == "done"
    assert C.state(str(tmp_path / "half")) == "partial"
    assert C.state(str(tmp_path / "none")) == "new"
    calls = []
    monkeypatch.setattr("whitebox.train.run", lambda task, **kw: calls.append(kw) or [])
    job = C.Job("classify", "crate", dict(model="crate"), 0, str(tmp_path / "done"), 1)
    assert [h["epoch"] for h in C.train_job(job, fast=True)] == [1, 2, 3]
    assert calls == []                                          # finished: skipped
    C.train_job(C.Job("classify", "crate", {}, 0, str(tmp_path / "half"), 1), fast=True)
    assert calls[-1]["resume"] is True
    C.train_job(C.Job("classify", "crate", {}, 0, str(tmp_path / "none"), 1), fast=True)
    assert calls[-1]["overwrite"] is True and "resume" not in calls[-1]


def test_summary_has_exactly_the_schema(tmp_path):
    jobs = C.plan(["classify", "mae"], [0, 1], str(tmp_path), StubCounter(), verbose=False)
    histories = {j.out: [dict(epoch=e, test_acc=0.1 * e + j.seed, test_mse=1.0 / e,
                              step_seconds=0.01, rc=[3.0, 2.0], nonzero=[0.5, 0.4])
                         for e in (1, 2)] for j in jobs}
    seg = {j.out: (0.25 + j.seed, [0, 1, 0]) for j in jobs if j.task == "classify"}
    result = C.summarise(jobs, histories, seg)
    assert set(result) == set(SCHEMA)
    for key, fields in SCHEMA.items():
        assert result[key] and all(set(r) == fields for r in result[key]), key
    assert [(r["task"], r["model"]) for r in result["rows"]] == [
        ("classify", "crate"), ("classify", "vit"), ("mae", "crate"), ("mae", "mae")]
    row = result["rows"][0]
    assert row["mean"] == pytest.approx(0.7) and row["std"] == pytest.approx(0.5)
    assert row["seeds"] == [0, 1] and row["metric"] == "held-out accuracy"
    assert len(result["layers"]) == 8 and len(result["ablation"]) == 4
    assert result["segmentation"][0] == dict(model="crate", miou=0.75, best_heads=[0, 1, 0])
    json.dumps(result)
    assert "| classify | crate |" in C.markdown(result, fast=True)
    C.figure(result, jobs, histories, str(tmp_path / "c.png"))
    assert os.path.getsize(tmp_path / "c.png") > 0


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="tasks must be among"):
        C.compare(["nope"], [0], fast=True, verbose=False)


# ------------------------------------------------------------------ the hybrids
@pytest.mark.parametrize("attention,mlp", C.ABLATION[1:])
def test_hybrid_gradients(attention, mlp):
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((2, 1, 4, 4)), np.array([0, 2])
    m = CRATE(4, 2, 3, 8, 2, 2, dim_head=4, channels=1, dtype="float64",
              attention_kind=attention, mlp=mlp)
    check_module(m, [x], loss=lambda z: wb.losses.cross_entropy(z, labels), tol=1e-6,
                 floor=1e-4)
    m(x, capture=True)
    width = 32 if mlp == "mlp" else 8                      # the GELU hidden, or the ISTA code
    assert m.captured["code"][0].shape == (2, 5, width)
    assert m.attention_maps()[0].shape == (2, 2, 5, 5)


def test_default_is_crate_name_for_name():
    a = CRATE(4, 2, 3, 8, 2, 2, dim_head=4, channels=1)
    b = CRATE(4, 2, 3, 8, 2, 2, dim_head=4, channels=1, attention_kind="mssa", mlp="ista")
    assert list(a.state_dict()) == list(b.state_dict()) and "attention_kind" not in a.config
    with pytest.raises(ValueError, match="attention_kind must be one of"):
        CRATE(4, 2, 3, 8, 2, 2, channels=1, attention_kind="conv")
    with pytest.raises(ValueError, match="MSSA's options"):
        CRATE(4, 2, 3, 8, 2, 2, channels=1, attention_kind="mhsa", attention=dict(out="tied"))


def test_classify_flags_refuse_what_they_do_not_use():
    from whitebox.train import run
    with pytest.raises(ValueError, match="--attention-kind"):
        run("classify", fast=True, model="vit", attention_kind="mhsa", out=os.devnull)
    with pytest.raises(ValueError, match="--ista-lambda"):
        run("classify", fast=True, mlp="mlp", ista_lambda=0.5, out=os.devnull)


# ------------------------------------------------------------------ the command
@pytest.mark.slow
def test_fast_classify_writes_every_file(tmp_path):
    out = str(tmp_path / "cmp")
    C.main(["--fast", "--tasks", "classify", "--seeds", "0", "--out", out])
    with open(os.path.join(out, "compare.json")) as f:
        result = json.load(f)
    for key, fields in SCHEMA.items():
        assert result[key], key
        for r in result[key]:
            assert set(r) == fields
            assert all(v is not None and v == v for v in r.values() if not isinstance(v, list))
    assert len(result["ablation"]) == 4 and len(result["segmentation"]) == 2
    assert os.path.getsize(os.path.join(out, "compare.png")) > 0
    assert "| classify | vit |" in open(os.path.join(out, "compare.md")).read()
    before = os.path.getmtime(os.path.join(out, "classify", "crate", "seed0", "checkpoint.npz"))
    C.main(["--fast", "--tasks", "classify", "--seeds", "0", "--out", out])   # all skipped
    assert os.path.getmtime(os.path.join(out, "classify", "crate", "seed0",
                                         "checkpoint.npz")) == before


# ------------------------------------------------------------------ the schedule
def test_estimate_schedules_the_longest_first(tmp_path):
    class Timed(StubCounter):
        def seconds(self, task, settings):
            if "mlp" in settings:                                  # the hybrids
                return 4.0
            return {"crate": 10.0, "vit": 6.0}[settings["model"]]

    jobs = C.plan(["classify"], [0, 1], str(tmp_path), Timed(), verbose=False)
    cpu, wall = C.estimate(jobs, Timed(), 2)
    # two of each (and the segmentation): crate 10, vit 6, three hybrids 4; on two workers
    # the longest-first schedule ends within one run of half the work
    assert cpu == pytest.approx(2 * (10 + 6 + 3 * 4) + C.SEGMENT_SECONDS * len(jobs))
    assert cpu / 2 <= wall <= cpu / 2 + 10 + C.SEGMENT_SECONDS
    one = C.estimate(jobs, Timed(), 1)
    assert one[1] == pytest.approx(one[0])


def test_workers_must_be_positive():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers must be a positive int"):
            C.compare(["classify"], [0], fast=True, verbose=False, workers=bad)


def test_finished_jobs_are_not_trained_again(tmp_path, monkeypatch):
    jobs = [C.Job("classify", "crate", {}, s, str(tmp_path / f"r{s}"), 1, seconds=s)
            for s in (1, 3, 2)]
    order = []
    monkeypatch.setattr(C, "do_job", lambda job, fast: order.append(job.seed) or
                        ([dict(epoch=1, test_acc=0.5)], None))
    lines = []
    done = C.run_jobs(jobs, True, 1, say=lines.append)
    assert order == [3, 2, 1] and set(done) == {j.out for j in jobs}     # longest first
    assert len(lines) == 3 and "held-out accuracy 0.5000" in lines[0]
    monkeypatch.setattr(C, "do_job", lambda job, fast: ("interrupted", "stopped"))
    with pytest.raises(KeyboardInterrupt, match="stopped"):
        C.run_jobs(jobs, True, 1)
