"""Official weights in and out: .npz and .pth containers, prefixes, errors."""
import sys

import numpy as np
import pytest

from whitebox.interop import (export_npz, export_pth, load_official, read_state_dict,
                              unwrap_state_dict)
from whitebox.models import CRATE

CFG = dict(image_size=8, patch_size=4, num_classes=3, dim=6, depth=2, heads=2, dim_head=3,
           channels=2)


def pair():
    return CRATE(**CFG, seed=1), CRATE(**CFG, seed=2)


def same(a, b):
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k], err_msg=k)


def test_npz_round_trip(tmp_path):
    a, b = pair()
    path = export_npz(a, tmp_path / "w.npz")
    load_official(b, path)
    same(a, b)


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_unwrap_containers_and_module_prefix(wrap):
    a, b = pair()
    sd = {f"module.{k}": v for k, v in a.state_dict().items()}
    obj = sd if wrap is None else {wrap: sd, "epoch": 3}
    load_official(b, obj)
    same(a, b)


def test_missing_misshaped_and_unexpected_keys_are_named(tmp_path):
    a, b = pair()
    sd = dict(a.state_dict())
    del sd["mlp_head.1.bias"]
    with pytest.raises(KeyError, match="mlp_head.1.bias"):
        load_official(b, sd)
    sd = dict(a.state_dict())
    sd["cls_token"] = np.zeros((1, 1, 7))
    before = {k: v.copy() for k, v in b.state_dict().items()}
    with pytest.raises(ValueError, match=r"cls_token.*\(1, 1, 7\).*\(1, 1, 6\)"):
        load_official(b, sd)
    for k, v in b.state_dict().items():  # nothing was half-loaded
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    sd = dict(a.state_dict(), extra_head=np.zeros(3))
    with pytest.raises(KeyError, match="extra_head"):
        load_official(b, sd)


def test_wrong_architecture_file(tmp_path):
    small = CRATE(**{**CFG, "depth": 1})
    path = export_npz(small, tmp_path / "small.npz")
    with pytest.raises(KeyError, match="transformer.layers.1"):
        load_official(CRATE(**CFG), path)


def test_missing_and_truncated_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        read_state_dict(tmp_path / "nope.npz")
    a, _ = pair()
    path = export_npz(a, tmp_path / "w.npz")
    data = open(path, "rb").read()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        read_state_dict(tmp_path / "cut.npz")


def test_pth_needs_torch_with_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "w.pth").write_bytes(b"\0")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"whitebox-crate\[torch\]"):
        read_state_dict(tmp_path / "w.pth")


def test_no_arrays_is_an_error():
    with pytest.raises(ValueError, match="no arrays"):
        unwrap_state_dict({"epoch": 1})


@pytest.mark.parametrize("wrap", [None, "state_dict"])
def test_pth_round_trip_and_official_layout_loads_it(tmp_path, wrap):
    torch = pytest.importorskip("torch")
    from whitebox.torch_crate import TorchCRATE
    a, b = pair()
    path = export_pth(a, tmp_path / "w.pth", wrap=wrap)
    load_official(b, path)
    same(a, b)
    # the PyTorch model with the official layout accepts the file strictly
    tm = TorchCRATE(**CFG)
    obj = torch.load(path, weights_only=True)
    tm.load_state_dict(obj if wrap is None else obj[wrap], strict=True)
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(tm(torch.from_numpy(x)).numpy(), a(x), rtol=1e-5, atol=1e-6)


def test_torch_module_weights_come_back(tmp_path):
    torch = pytest.importorskip("torch")
    from whitebox.torch_crate import TorchCRATE
    tm = TorchCRATE(**CFG)
    torch.save({"model": {f"module.{k}": v for k, v in tm.state_dict().items()}},
               tmp_path / "ddp.pth")
    m = load_official(CRATE(**CFG), tmp_path / "ddp.pth")
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(m(x), tm(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)
