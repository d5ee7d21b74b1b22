"""The standard transformers through the shared loop: --model vit, mae, gpt, bert in fast mode,
exact resume, threads, the per-layer measures and the figures; CRATE stays each task's default."""
import numpy as np
import pytest
from common_checks import assert_same_checkpoint, without_times

from whitebox import train as train_job

TEXT = ("Python is a programming language that lets you work quickly and integrate "
        "systems more effectively. ") * 40
FIGURES = {"classify": ("curves.png", "layers.png", "attention.png"),
           "mae": ("curves.png", "layers.png", "reconstructions.png"),
           "lm": ("curves.png", "layers.png", "atoms.png"),
           "mlm": ("curves.png", "layers.png", "atoms.png")}
MODELS = {"classify": ("vit", "ViT"), "mae": ("mae", "MAE"), "lm": ("gpt", "GPT"),
          "mlm": ("bert", "BERT")}


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def _run(task, out, *flags):
    return train_job.main(["--task", task, "--fast", "--out", str(out), "--no-progress", *flags])


def _data(task, text_file):
    return ("--data", str(text_file)) if task in ("lm", "mlm") else ()


@pytest.mark.parametrize("task", ["classify", "mae", "lm", "mlm"])
def test_each_baseline_trains_with_measures_figures_and_checkpoint(tmp_path, capsys, task,
                                                                  text_file):
    model, cls = MODELS[task]
    history = _run(task, tmp_path / "run", "--model", model, *_data(task, text_file))
    header = capsys.readouterr().out.splitlines()[0]
    assert header.startswith(f"{task}: {cls} --model {model}, standard attention"), header
    last = history[-1]
    assert len(history) == 2 and np.isfinite(last["train_loss"])
    assert len(last["rc"]) == len(last["nonzero"]) == (1 if task == "mae" else 2)
    assert all(r > 0 for r in last["rc"])
    assert all(f > 0.99 for f in last["nonzero"])       # GELU hidden units: no exact zeros
    for name in FIGURES[task] + ("checkpoint.npz", "metrics.jsonl", "config.json"):
        assert (tmp_path / "run" / name).exists(), name
    cfg, _, loaded = train_job.load_run(str(tmp_path / "run"))
    assert cfg.model == model and type(loaded).__name__ == cls


def test_crate_stays_the_default_model(tmp_path):
    cfg = train_job.config_from_args(["--task", "lm", "--fast", "--out", str(tmp_path)])
    assert cfg.model == "crate"
    for task in ("classify", "mae", "mlm"):
        assert train_job.get_task(task).models[0] == "crate"


def test_mae_resume_equals_an_uninterrupted_run(tmp_path):
    """The masks come from the model's generator (checkpointed): a run stopped after epoch 1
    and resumed ends with the same metrics and the same weights, bit for bit."""
    flags = ("--model", "mae", "--epochs", "3", "--n-train", "128", "--no-figures")
    straight = _run("mae", tmp_path / "a", *flags)
    assert len(_run("mae", tmp_path / "b", *flags, "--stop-after", "1")) == 1
    resumed = train_job.main(["--out", str(tmp_path / "b"), "--resume", "--no-progress",
                              "--task", "mae"])
    assert without_times(resumed, "run") == without_times(straight, "run")
    assert_same_checkpoint(tmp_path / "a", tmp_path / "b")


def test_vit_on_two_threads_matches_one(tmp_path, capsys):
    """--threads 2 splits each batch in two shards: the same run up to float round-off."""
    flags = ("--model", "vit", "--n-train", "256", "--no-figures")
    one = _run("classify", tmp_path / "one", *flags, "--threads", "1")
    two = _run("classify", tmp_path / "two", *flags, "--threads", "2")
    assert "2 threads, each batch split in 2" in capsys.readouterr().out
    for h1, h2 in zip(one, two):
        for key in ("train_loss", "test_loss", "test_acc"):
            assert h2[key] == pytest.approx(h1[key], rel=1e-4, abs=1e-5), key


@pytest.mark.parametrize("task, flag", [("classify", "--ista-step"), ("lm", "--expansion"),
                                        ("mae", "--ista-lambda")])
def test_crate_settings_are_refused_for_a_baseline(tmp_path, capsys, task, flag, text_file):
    with pytest.raises(SystemExit) as stop:
        _run(task, tmp_path / "run", "--model", MODELS[task][0], flag, "3",
             *_data(task, text_file))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"{flag} is a CRATE setting that --model {MODELS[task][0]} does not use" in err


def test_vit_on_two_mpi_ranks_follows_one_process(tmp_path):
    """--distributed: two ranks, each half of every batch, the curve of one process."""
    from common_checks import assert_same_curve, read_curve
    from test_distributed import mpirun, train
    mpirun()
    train(tmp_path / "one", "--model", "vit")
    out = train(tmp_path / "two", "--model", "vit", ranks=2)
    assert "ViT --model vit, standard attention" in out and "2 MPI ranks" in out
    assert_same_curve(read_curve(tmp_path / "two"), read_curve(tmp_path / "one"))
