"""The masked-autoencoding job (--task mae) end to end in its fast mode, and exact resumption.

The runs read a tiny MNIST look-alike written as idx files into tmp_path, so
they need no optional package and take seconds.
"""
import json
import re

import numpy as np
import pytest
from common_checks import assert_same_checkpoint, without_times
from conftest import write_bar_mnist

from whitebox import train as train_job
from whitebox.checkpoint import load_arrays
from whitebox.tasks.mae import MaskedAutoencoding
from whitebox.training.loop import TIME_KEYS

FAST = MaskedAutoencoding.fast
RECORD_KEYS = {"epoch", "step", "train_loss", "test_mse", "baseline", "rc", "rc_decoder",
               "nonzero", "probe_acc", "pixel_probe_acc", "lr", *TIME_KEYS}


@pytest.fixture(scope="module")
def mnist_folder(tmp_path_factory):
    """Each class a bright bar at its own height: masked bars are guessable from the rest."""
    return write_bar_mnist(tmp_path_factory.mktemp("mnist_mae"), noise=40, cols=(2, 26))


def _run(out, folder, *flags):
    argv = ["--task", "mae", "--fast", "--dataset", "mnist", "--data", str(folder),
            "--out", str(out), "--no-progress", *flags]
    return train_job.main(argv)


def test_fast_run_prints_the_masked_mse_and_draws_figures(tmp_path, mnist_folder, capsys):
    out = tmp_path / "run"
    history = _run(out, mnist_folder, "--epochs", "3")
    printed = capsys.readouterr().out.strip().splitlines()
    last = history[-1]
    assert re.fullmatch(r"test masked mse: \d\.\d{4} \(mean-image baseline \d\.\d{4}\)",
                        printed[-1])
    assert printed[-1] == (f"test masked mse: {last['test_mse']:.4f} (mean-image baseline "
                           f"{last['baseline']:.4f})")
    assert printed[-2].startswith("linear probe")
    with open(out / "metrics.jsonl") as f:
        records = [{k: v for k, v in json.loads(line).items() if k != "run"} for line in f]
    assert records == history and [r["epoch"] for r in records] == [1, 2, 3]
    for r in records:
        assert set(r) == RECORD_KEYS
        assert len(r["rc"]) == FAST["depth"] and len(r["rc_decoder"]) == FAST["decoder_depth"]
        assert all(np.isfinite(r["rc"] + r["rc_decoder"]))
        assert all(0 <= v <= 1 for v in r["nonzero"])
        assert r["step"] == 3 * r["epoch"] and r["baseline"] == records[0]["baseline"]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    for name in ("reconstructions.png", "curves.png", "layers.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    state = load_arrays(out / "checkpoint.npz")
    assert state["decoder_pos_embed"].shape == (1, 17, FAST["dim"])   # frozen, still saved


def test_resume_continues_exactly(tmp_path, mnist_folder):
    """Masks come from the model's checkpointed generator: a resumed run masks the same."""
    straight = _run(tmp_path / "a", mnist_folder, "--epochs", "2", "--no-figures")
    first = _run(tmp_path / "b", mnist_folder, "--epochs", "2", "--stop-after", "1",
                 "--no-figures")
    assert len(first) == 1
    resumed = _run(tmp_path / "b", mnist_folder, "--resume")
    assert without_times(resumed) == without_times(straight)
    assert_same_checkpoint(tmp_path / "a", tmp_path / "b")


def test_bad_flags_are_refused_before_any_work(tmp_path, mnist_folder, capsys):
    with pytest.raises(SystemExit):
        _run(tmp_path / "c", mnist_folder, "--mask-ratio", "1.0")
    assert "--mask-ratio" in capsys.readouterr().err
    with pytest.raises(ValueError, match="multiple of 4"):
        _run(tmp_path / "d", mnist_folder, "--dim", "30", "--debug")


def test_one_mae_training_step_reads_nothing_back(monkeypatch):
    """Masks drawn, loss, backward, clip and AdamW: no device value read back (see test_no_sync)."""
    from test_no_sync import Counting, on_device
    from whitebox import backend
    from whitebox.models import CRATEMAE
    from whitebox.optim import AdamW, clip_grad_norm
    from whitebox.training import make_config
    monkeypatch.setattr(backend, "_on_host", lambda a: not isinstance(a, Counting))
    Counting.reads = []
    model = on_device(CRATEMAE(28, 7, dim=32, depth=1, heads=2, decoder_depth=1, channels=1,
                               seed=0))
    # the drawn masking noise arrives on the "device" too
    monkeypatch.setattr("whitebox.models._masked.to_device",
                        lambda a, name=None: np.asarray(a).view(Counting))
    optimizer = AdamW(model, lr=1e-3, weight_decay=0.05)
    task = MaskedAutoencoding(make_config(MaskedAutoencoding, {}))
    images = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32).view(Counting)
    model.zero_grad()
    loss, sums = task.train_step(model, task.draw(model, (images, None)))
    clip_grad_norm(model, 1.0)
    optimizer.step()
    assert Counting.reads == [], f"the step read device values back: {Counting.reads}"
    assert isinstance(loss, Counting) and loss.shape == ()


def test_evaluation_in_a_second_thread_changes_no_number(tmp_path, mnist_folder):
    aside = _run(tmp_path / "on", mnist_folder, "--epochs", "2", "--no-figures", "--eval-thread")
    here = _run(tmp_path / "off", mnist_folder, "--epochs", "2", "--no-figures",
                "--no-eval-thread")
    assert without_times(aside) == without_times(here)
    assert_same_checkpoint(tmp_path / "on", tmp_path / "off")
