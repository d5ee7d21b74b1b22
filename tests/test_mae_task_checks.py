"""The mae task names the flag when the linear probe cannot be fitted (--n-train too small)."""
import re

import pytest
from conftest import write_bar_mnist

from whitebox import train as train_job


def test_n_train_too_small_for_the_probe_names_the_flag(tmp_path, capsys):
    folder = write_bar_mnist(tmp_path, noise=40, cols=(2, 26))
    argv = ["--task", "mae", "--fast", "--dataset", "mnist", "--data", str(folder),
            "--out", str(tmp_path / "out"), "--no-progress", "--n-train", "1"]
    with pytest.raises(SystemExit) as stop:
        train_job.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(r"whitebox.train: error: .*--n-train: the linear probe .* "
                                      r"at least two classes.* got 1 image\(s\) of 1 class",
                                      err[0]), err
