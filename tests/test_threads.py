"""whitebox.threads sets the BLAS pool, restores it, and refuses nonsense."""
import numpy as np
import pytest

from whitebox import threads


@pytest.fixture
def restore_threads():
    before = threads.get_threads()
    yield
    threads.set_threads(before)


def test_set_threads_changes_the_pool_and_returns_the_previous(restore_threads):
    threads.set_threads(2)
    assert threads.set_threads(1) == 2
    assert threads.get_threads() == 1


def test_limited_restores_the_previous_count(restore_threads):
    threads.set_threads(2)
    with threads.limited(1) as n:
        assert n == 1
        assert threads.get_threads() == 1
        a = np.ones((64, 64))
        np.testing.assert_allclose(a @ a, 64.0)
    assert threads.get_threads() == 2


def test_none_means_one_per_core(restore_threads):
    import os
    threads.set_threads(None)
    assert threads.get_threads() == (os.cpu_count() or 1)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_counts_are_refused(bad):
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        threads.set_threads(bad)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        with threads.limited(bad):
            pass


def test_train_flag_sets_the_pool_before_any_work(monkeypatch, tmp_path):
    from whitebox.train import config_from_args
    from whitebox.training import loop

    cfg = config_from_args(["--fast", "--threads", "2", "--out", str(tmp_path / "run")])
    assert cfg.threads == 2
    seen = []

    def record(n):
        seen.append(n)
        raise KeyboardInterrupt             # stop before the run starts
    monkeypatch.setattr(loop, "set_threads", record)
    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg)
    assert seen == [2]
    assert config_from_args(["--fast"]).threads == threads.DEFAULT_THREADS


def test_train_flag_refuses_zero_threads(capsys):
    from whitebox.train import config_from_args
    with pytest.raises(SystemExit):
        config_from_args(["--threads", "0"])
    assert "--threads" in capsys.readouterr().err


def test_keep_freed_memory_reports_whether_glibc_took_it():
    import ctypes
    from whitebox import memory
    try:
        ctypes.CDLL(None).gnu_get_libc_version
        glibc = True
    except (OSError, AttributeError):
        glibc = False
    assert memory.keep_freed_memory() is glibc
