"""examples/measure_layers.py on a whitebox run and on official-layout weights."""

import numpy as np
import pytest

from whitebox import train as train_job
from whitebox.interop import export_npz
from whitebox.models import crate_tiny

from conftest import load_script

measure_layers = load_script("examples/measure_layers.py")


def test_measures_a_training_run(tmp_path, capsys):
    pytest.importorskip("sklearn")
    run = tmp_path / "run"
    train_job.main(["--dataset", "digits", "--fast", "--out", str(run), "--no-progress",
                    "--no-figures"])
    rows = measure_layers.main(["--run", str(run), "--count", "32"])
    assert [r["label"] for r in rows] == ["untrained", "trained"]
    assert all(len(r["rc"]) == 2 and all(v > 0 for v in r["rc"]) for r in rows)
    assert all(0 < v <= 1 for r in rows for v in r["nonzero"])
    assert rows[0]["rc"] != rows[1]["rc"]
    assert (run / "layers_trained_vs_untrained.png").stat().st_size > 0
    # the docs name the file that is written, and no other figure
    assert measure_layers.FIGURE == "layers_trained_vs_untrained.png"
    assert f"``{measure_layers.FIGURE}``" in measure_layers.__doc__
    assert sorted(p.name for p in run.glob("layers*.png")) == [measure_layers.FIGURE]
    assert "| 2 |" in capsys.readouterr().out


def test_measures_official_layout_weights(tmp_path):
    weights = export_npz(crate_tiny(num_classes=7, seed=3), tmp_path / "w.npz")
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 224, 224), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    rows = measure_layers.main(["--weights", str(weights), "--arch", "tiny", "--images",
                                str(tmp_path / "images.npy"), "--count", "2", "--batch", "1",
                                "--out", str(tmp_path)])
    assert len(rows[1]["rc"]) == 12
    with pytest.raises(ValueError, match="needs --images"):
        measure_layers.main(["--weights", str(weights), "--arch", "tiny"])
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        measure_layers.main(["--run", str(tmp_path / "nothing")])
