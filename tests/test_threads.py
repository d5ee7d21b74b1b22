"""whitebox.threads sets the BLAS pool, restores it, and refuses nonsense; whitebox.memory's
malloc settings take effect and come back; training holds both only while it trains."""
import ctypes

import numpy as np
import pytest

from whitebox import memory, threads


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


def _blas_pool():
    from threadpoolctl import threadpool_info
    if not any(p["user_api"] == "blas" for p in threadpool_info()):
        pytest.skip("threadpoolctl finds no BLAS pool in this NumPy")


@pytest.mark.parametrize("dropout,splits,inside", [(0.1, True, 1), (0.0, True, 1),
                                                   (0.0, False, 2)])
def test_training_sets_the_pool_and_malloc_only_for_its_steps(monkeypatch, tmp_path,
                                                               restore_threads, dropout, splits,
                                                               inside):
    """threads=2: 1 BLAS thread in each shard's thread (dropout or not), 2 in a step the
    task does not split; freed memory kept during the steps; both as before once train()
    returns."""
    from conftest import write_bar_mnist
    from whitebox.tasks.classify import Classify
    from whitebox.training import make_config, train
    _blas_pool()
    glibc = _mallinfo2() is not None
    memory.restore_malloc_defaults()
    threads.set_threads(3)
    cfg = make_config(Classify, dict(threads=2, dropout=dropout, dataset="mnist", epochs=1,
                                     data=str(write_bar_mnist(tmp_path)),
                                     out=str(tmp_path / "run"), figures=False, progress=False),
                      fast=True)
    seen = []
    step = Classify.train_step

    def spy(self, model, batch):
        seen.append((threads.get_threads(), glibc and _heap_serves(4 * 2 ** 20)))
        return step(self, model, batch)
    monkeypatch.setattr(Classify, "train_step", spy)
    monkeypatch.setattr(Classify, "step_splits", lambda self, model: splits)
    train(Classify, cfg)
    assert seen and set(seen) == {(inside, glibc)}
    assert threads.get_threads() == 3
    if glibc:
        assert not _heap_serves()


def test_training_restores_the_pool_after_an_error(monkeypatch, tmp_path, restore_threads):
    from conftest import write_bar_mnist
    from whitebox.tasks.classify import Classify
    from whitebox.training import make_config, train
    _blas_pool()
    threads.set_threads(3)
    cfg = make_config(Classify, dict(threads=2, dropout=0.1, dataset="mnist", epochs=1,
                                     data=str(write_bar_mnist(tmp_path)),
                                     out=str(tmp_path / "run"), figures=False, progress=False),
                      fast=True)

    def fail(self, model, batch):
        raise KeyboardInterrupt
    monkeypatch.setattr(Classify, "train_step", fail)
    with pytest.raises(KeyboardInterrupt, match="interrupted at epoch 1 step 0"):
        train(Classify, cfg)
    assert threads.get_threads() == 3


def test_train_flag_refuses_zero_threads(capsys):
    from whitebox.train import config_from_args
    with pytest.raises(SystemExit):
        config_from_args(["--threads", "0"])
    assert "--threads" in capsys.readouterr().err


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo2():
    """glibc's mallinfo2 (2.33 and later), or None."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        return libc
    except (OSError, AttributeError, TypeError):
        return None


def _heap_serves(nbytes=None):
    """True when malloc(nbytes) comes from the heap, False when from a mapping of its own.

    nbytes None: 1 MiB more than all the free heap, so no free block can
    serve it and only the mmap threshold decides.
    """
    libc = _mallinfo2()
    if nbytes is None:
        nbytes = libc.mallinfo2().fordblks + 2 ** 20
    before = libc.mallinfo2().hblks            # blocks mapped one by one, process-wide
    block = libc.malloc(nbytes)
    mapped = libc.mallinfo2().hblks - before
    libc.free(block)
    return mapped == 0


def test_keeping_freed_memory_serves_large_blocks_from_the_heap_inside_only():
    if _mallinfo2() is None:
        pytest.skip("needs glibc's mallinfo2 (glibc >= 2.33) to see where a block comes from")
    memory.restore_malloc_defaults()
    assert not _heap_serves()                  # above the 128 KiB default: mapped
    with memory.keeping_freed_memory() as kept:
        assert kept and _heap_serves(4 * 2 ** 20)
        with memory.keeping_freed_memory():
            pass
        assert _heap_serves(4 * 2 ** 20)       # a nested block does not restore early
    assert not _heap_serves()
    assert memory.keep_freed_memory() and _heap_serves(4 * 2 ** 20)
    with memory.keeping_freed_memory():
        pass
    assert _heap_serves(4 * 2 ** 20)           # kept from now on: a block leaves it so
    memory.restore_malloc_defaults()
    assert not _heap_serves()
