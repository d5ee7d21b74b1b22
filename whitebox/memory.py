"""Keep freed memory in the process for the next step to reuse (glibc's malloc).

A training step allocates and frees the same few dozen arrays every step:
activations, caches, gradients, temporaries, most of them between 0.1 and a
few MiB. glibc's malloc (Linux) serves a block above its mmap threshold (128
KiB at start, raised as it adapts) with fresh pages from the kernel and hands
them back on free, and trims the heap back to the kernel once more than its
trim threshold lies free at its top. Either way the next step's arrays land
on fresh pages, which the kernel zeroes and maps again on their first touch
(benchmarks/README.md gives the measured cost).

Raising both thresholds keeps the blocks a step frees in the process, so the
next step's arrays reuse them, as PyTorch's and CuPy's caching allocators do
for theirs; the process keeps its high-water mark of memory instead of
returning it between steps.

    with keeping_freed_memory():     # inside the block only (training, NumPy runs)
        ...
    keep_freed_memory()              # from now on (the benchmarks, before timing)

Leaving the block sets glibc's documented defaults back (both thresholds
128 KiB) and returns the freed heap to the kernel (``malloc_trim``), unless
``keep_freed_memory()`` was called. glibc offers no way to read a threshold,
so one set some other way (``mallopt``, ``MALLOC_MMAP_THRESHOLD_``) is not
restored, and the mmap threshold no longer adapts. Elsewhere
(macOS, Windows, musl) both do nothing and report False.
"""
import contextlib
import ctypes

_M_TRIM_THRESHOLD = -1                   # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2 ** 20            # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 2 ** 30
DEFAULT_THRESHOLD = 128 * 2 ** 10        # glibc's default of both thresholds


def _glibc():
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version        # present in glibc only
        return libc
    except (OSError, AttributeError, TypeError):     # TypeError: no CDLL(None) on Windows
        return None


def _raise_thresholds():
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


_for_good = False   # keep_freed_memory() was called: no block restores the defaults
_depth = 0          # blocks of keeping_freed_memory open now (nested blocks restore once)


def keep_freed_memory():
    """From now on, blocks up to 32 MiB come from the heap, and up to 1 GiB of freed heap stays.

    Returns True where glibc accepted both settings, False elsewhere.
    """
    global _for_good
    _for_good = _raise_thresholds()
    return _for_good


def restore_malloc_defaults():
    """Both thresholds back to glibc's defaults (128 KiB), the free heap returned to the kernel.

    Returns True where glibc accepted both settings, False elsewhere.
    """
    global _for_good
    _for_good = False
    libc = _glibc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, DEFAULT_THRESHOLD)) and \
        bool(libc.mallopt(_M_TRIM_THRESHOLD, DEFAULT_THRESHOLD))
    libc.malloc_trim(0)
    return ok


@contextlib.contextmanager
def keeping_freed_memory():
    """``keep_freed_memory()`` inside a ``with`` block; glibc's defaults come back after it.

    Yields True where glibc took the settings, False elsewhere. Nested
    blocks keep the settings until the outermost one ends; after
    ``keep_freed_memory()`` no block restores them.
    """
    global _depth
    kept = _raise_thresholds()
    _depth += 1
    try:
        yield kept
    finally:
        _depth -= 1
        if kept and _depth == 0 and not _for_good:
            restore_malloc_defaults()
