"""Keep freed memory in the process for the next step to reuse (glibc's malloc).

A training step allocates and frees the same few dozen arrays every step:
activations, caches, gradients, temporaries, most of them between 0.1 and a
few MiB. glibc's malloc (Linux) serves a block above its mmap threshold (128
KiB at start, raised as it adapts) with fresh pages from the kernel and hands
them back on free, and trims the heap back to the kernel once more than twice
that threshold lies free at its top. Either way the next step's arrays land
on fresh pages, and the kernel zeroes and maps every 4 KiB page again on its
first touch. On a 2-core x86 VM that cost 8-16% of a float32 CRATE training
step (mnist-demo shard 99 -> 83 ms, cifar-crate-t shard 463 -> 428 ms,
alternating steps in one process), and half the time of a fused LayerNorm.

`keep_freed_memory()` raises both thresholds, so the blocks a step frees stay
in the process and the next step's arrays reuse them, as PyTorch's and
CuPy's caching allocators do for theirs. The process keeps its high-water
mark of memory instead of returning it between steps. Training calls it for
NumPy runs (whitebox/training/loop.py), for the rest of the process; the
benchmarks call it before timing anything, so every column (PyTorch's CPU
allocator sits on the same malloc) runs under the same setting. Elsewhere
(macOS, Windows, musl) it does nothing and returns False.
"""
import ctypes

_M_TRIM_THRESHOLD = -1                   # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2 ** 20            # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 2 ** 30


def _glibc():
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version        # present in glibc only
        return libc
    except (OSError, AttributeError, TypeError):     # TypeError: no CDLL(None) on Windows
        return None


def keep_freed_memory():
    """Blocks up to 32 MiB come from the heap, and up to 1 GiB of freed heap stays.

    Returns True where glibc accepted both settings, False elsewhere.
    """
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
