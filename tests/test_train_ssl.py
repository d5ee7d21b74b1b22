"""The self-supervised job (--task ssl) end to end in its fast mode, both losses, both
backbones, and resume."""
import re

import numpy as np
import pytest
from common_checks import assert_same_checkpoint, without_times

from whitebox import train as train_job
from whitebox.checkpoint import load_arrays

pytest.importorskip("sklearn")      # the bundled digits


def _run(out, *flags):
    return train_job.main(["--task", "ssl", "--fast", "--out", str(out), "--no-progress",
                           "--threads", "1", *flags])


@pytest.mark.parametrize("model", ["crate", "vit"])
@pytest.mark.parametrize("loss", ["simdino", "dino"])
def test_fast_run_ends_with_the_knn_line(tmp_path, capsys, loss, model):
    history = _run(tmp_path / loss, "--ssl-loss", loss, "--model", model)
    lines = capsys.readouterr().out.strip().splitlines()
    last_line = lines[-1]
    assert f"--model {model}, " + ("standard attention" if model == "vit" else "official MSSA") \
        in lines[0]
    h = history[-1]
    assert re.fullmatch(r"test k-NN accuracy: \d+\.\d% \(raw pixels \d+\.\d%, untrained "
                        r"network \d+\.\d%\)", last_line)
    assert last_line == (f"test k-NN accuracy: {100 * h['knn']:.1f}% (raw pixels "
                         f"{100 * h['knn_raw']:.1f}%, untrained network "
                         f"{100 * h['knn_untrained']:.1f}%)")
    assert all(np.isfinite(r["train_loss"]) for r in history)
    assert ("train_expansion" in h) is (loss == "simdino")
    state = load_arrays(tmp_path / loss / "checkpoint.npz")
    assert any(k.startswith("teacher.") for k in state) and "ema_steps" in state
    steps = history[-1]["step"]
    np.testing.assert_array_equal(state["ema_steps"], [steps, steps])
    if loss == "dino":
        assert np.abs(state["center"]).sum() > 0
    for name in ("ssl_curves.png", "ssl_pca.png", "ssl_attention.png"):
        data = (tmp_path / loss / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name


@pytest.mark.parametrize("loss, model", [("simdino", "crate"), ("dino", "crate"),
                                         ("simdino", "vit")])
def test_resume_continues_exactly(tmp_path, loss, model):
    """Crops come from the checkpointed data generator; teacher, centre and EMA count
    are checkpointed parameters: a resumed run takes the same steps."""
    flags = ("--ssl-loss", loss, "--model", model, "--epochs", "2", "--no-figures")
    straight = _run(tmp_path / "a", *flags)
    assert len(_run(tmp_path / "b", *flags, "--stop-after", "1")) == 1
    resumed = _run(tmp_path / "b", "--resume")
    assert without_times(resumed) == without_times(straight)
    assert_same_checkpoint(tmp_path / "a", tmp_path / "b")


def test_vit_refuses_what_it_cannot_build(tmp_path, capsys):
    for flags, message in ((("--heads", "3"), "must be divisible by --heads (3)"),
                           (("--dim-head", "8"), "--dim-head is CRATE's head width")):
        with pytest.raises(SystemExit):
            _run(tmp_path / "a", "--model", "vit", *flags)
        assert message in capsys.readouterr().err


def test_dino_run_saved_before_head_bn_resumes_without_it(tmp_path):
    """A config.json written before --head-bn existed has no such setting; its head had no
    batch norm, so --resume must build that head (Task.introduced), not today's default."""
    import json
    out = tmp_path / "old"
    flags = ("--ssl-loss", "dino", "--epochs", "2", "--no-figures")
    straight = _run(tmp_path / "off", *flags, "--head-bn", "off")
    _run(out, *flags, "--head-bn", "off", "--stop-after", "1")
    config = json.loads((out / "config.json").read_text())
    del config["options"]["head_bn"]
    (out / "config.json").write_text(json.dumps(config))
    resumed = _run(out, "--resume")
    assert without_times(resumed) == without_times(straight)
