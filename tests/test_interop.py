"""Official weights in and out: .npz and .pth containers, prefixes, errors."""
import sys

import numpy as np
import pytest

from whitebox import nn
from whitebox.interop import (export_npz, export_pth, export_safetensors, load_official,
                              read_state_dict, unwrap_state_dict)
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


def test_unknown_formats_and_sources_are_named(tmp_path):
    a, _ = pair()
    (tmp_path / "probe.py").write_text("print('hi')")
    with pytest.raises(ValueError, match=r"unknown format '.py'; expected .safetensors, .npz or "
                                         r"a PyTorch file \(.pth, .pt, .bin, .ckpt\)"):
        load_official(a, tmp_path / "probe.py")
    with pytest.raises(TypeError, match="source must be a path or a dict of arrays, got NoneType"):
        load_official(a, None)


def test_a_training_checkpoint_gives_its_model(tmp_path):
    from whitebox.checkpoint import save_checkpoint
    from whitebox.optim import AdamW
    a, b = pair()
    save_checkpoint(tmp_path / "checkpoint.npz", a, AdamW(a), step=3, epoch=1)
    same(load_official(b, tmp_path / "checkpoint.npz"), a)


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
    from whitebox.torch_twins.crate import TorchCRATE
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
    from whitebox.torch_twins.crate import TorchCRATE
    tm = TorchCRATE(**CFG)
    torch.save({"model": {f"module.{k}": v for k, v in tm.state_dict().items()}},
               tmp_path / "ddp.pth")
    m = load_official(CRATE(**CFG), tmp_path / "ddp.pth")
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(m(x), tm(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ safetensors
def test_safetensors_round_trip_and_dispatch_on_the_suffix(tmp_path):
    numpy_api = pytest.importorskip("safetensors.numpy")
    a, b = pair()
    path = export_safetensors(a, tmp_path / "w.safetensors")
    raw = numpy_api.load_file(path)                      # the official names, plain arrays
    assert set(raw) == set(a.state_dict())
    load_official(b, path)
    same(a, b)
    for suffix in (".npz", ".safetensors") + ((".pth",) if _has("torch") else ()):
        c = CRATE(**CFG, seed=3)
        export = {".npz": export_npz, ".pth": export_pth,
                  ".safetensors": export_safetensors}[suffix]
        load_official(c, export(a, tmp_path / f"x{suffix}"))
        same(a, c)


def _has(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def test_safetensors_strict_names_and_shapes(tmp_path):
    numpy_api = pytest.importorskip("safetensors.numpy")
    a, b = pair()
    before = {k: v.copy() for k, v in b.state_dict().items()}
    sd = {k: np.ascontiguousarray(v) for k, v in a.state_dict().items()}
    del sd["mlp_head.1.bias"]
    numpy_api.save_file(sd, tmp_path / "missing.safetensors")
    with pytest.raises(KeyError, match="mlp_head.1.bias"):
        load_official(b, tmp_path / "missing.safetensors")
    sd = {k: np.ascontiguousarray(v) for k, v in a.state_dict().items()}
    sd["cls_token"] = np.zeros((1, 1, 7), np.float32)
    numpy_api.save_file(sd, tmp_path / "shape.safetensors")
    with pytest.raises(ValueError, match=r"cls_token.*\(1, 1, 7\).*\(1, 1, 6\)"):
        load_official(b, tmp_path / "shape.safetensors")
    for k, v in b.state_dict().items():                 # nothing was half-loaded
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    data = open(export_safetensors(a, tmp_path / "w.safetensors"), "rb").read()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.safetensors.*truncated"):
        load_official(b, tmp_path / "cut.safetensors")


def test_safetensors_missing_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "w.safetensors").write_bytes(b"\0" * 16)
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match=r"whitebox-crate\[safetensors\]"):
        read_state_dict(tmp_path / "w.safetensors")
    with pytest.raises(ImportError, match=r"whitebox-crate\[safetensors\]"):
        export_safetensors(pair()[0], tmp_path / "out.safetensors")


# ------------------------------------------------------------ translation hooks
class TinyLM(nn.Module):
    """A model whose official files also hold a tied alias and a causal-mask buffer."""

    def __init__(self, seed=0):
        super().__init__()
        self.wte = nn.Embedding(5, 4, seed=seed)
        self.ln = nn.LayerNorm(4)

    def from_official_state(self, state):
        lm_head = state.pop("lm_head.weight")
        if not np.array_equal(lm_head, state["wte.weight"]):
            raise ValueError("lm_head.weight must equal wte.weight (tied)")
        return {k: v for k, v in state.items() if not k.endswith(".attn.bias")}

    def to_official_state(self, state):
        mask = np.tril(np.ones((3, 3), np.float32))[None, None]
        return {**state, "lm_head.weight": state["wte.weight"], "h.0.attn.bias": mask}


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".pth"])
def test_translation_hooks_run_for_every_format(tmp_path, suffix):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    if suffix == ".pth":
        pytest.importorskip("torch")
    export = {".npz": export_npz, ".pth": export_pth, ".safetensors": export_safetensors}[suffix]
    a, b = TinyLM(seed=1), TinyLM(seed=2)
    path = export(a, tmp_path / f"lm{suffix}")
    on_disk = read_state_dict(path)
    assert set(on_disk) == {"wte.weight", "ln.weight", "ln.bias", "lm_head.weight",
                            "h.0.attn.bias"}
    load_official(b, path)
    same(a, b)
    plain = nn.Sequential()                              # no hooks: the extra keys are refused
    with pytest.raises(KeyError, match="lm_head.weight"):
        load_official(plain, path)
    on_disk["lm_head.weight"] = on_disk["lm_head.weight"] + 1.0
    with pytest.raises(ValueError, match="tied"):        # dict sources go through it too
        load_official(b, on_disk)


# ------------------------------------------------------------ bfloat16
def test_bfloat16_pth_converted_exactly_with_a_warning(tmp_path):
    torch = pytest.importorskip("torch")
    a, b = pair()
    sd = {k: torch.from_numpy(np.array(v)).to(torch.bfloat16) for k, v in a.state_dict().items()}
    torch.save(sd, tmp_path / "bf16.pth")
    with pytest.warns(UserWarning, match=r"bf16\.pth.*bfloat16.*'to_patch_embedding"):
        load_official(b, tmp_path / "bf16.pth")
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v, sd[k].float().numpy(), err_msg=k)


def test_bfloat16_safetensors_converted_exactly_with_a_warning(tmp_path):
    pytest.importorskip("safetensors")
    import json
    import struct
    values = np.array([[1.0, -2.5, 3.140625], [0.0, 1e-3, 65280.0]], np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")  # the top halves: bfloat16
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 3],
                               "data_offsets": [0, bits.nbytes]}}).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bits.tobytes())
    with pytest.warns(UserWarning, match=r"bf16\.safetensors.*bfloat16.*'w'"):
        state = read_state_dict(path)
    np.testing.assert_array_equal(state["w"], (bits.astype(np.uint32) << 16).view(np.float32))
    assert state["w"].dtype == np.float32 and state["w"][0, 0] == 1.0


def test_float8_pth_converted_exactly_with_a_warning_naming_file_and_keys(tmp_path):
    torch = pytest.importorskip("torch")
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8")
    values = torch.tensor([[0.5, -1.75], [448.0, 0.015625]])     # exact in float8_e4m3fn
    path = tmp_path / "f8.pth"
    torch.save({"w": values.to(torch.float8_e4m3fn), "b": torch.ones(2)}, path)
    with pytest.warns(UserWarning, match=r"f8\.pth.*float8_e4m3fn.*'w'"):
        state = read_state_dict(path)
    np.testing.assert_array_equal(state["w"], values.numpy())
    assert state["w"].dtype == np.float32


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_a_dtype_numpy_lacks_is_named_with_file_and_key(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "q.pth"
    torch.save({"w": torch.ones(2, dtype=torch.complex32)}, path)
    with pytest.raises((TypeError, ValueError), match=r"q\.pth.*'w'.*complex32"):
        read_state_dict(path)
