"""Official files both ways for the baselines: .safetensors, .npz and .pth.

Each model writes every format, a differently seeded twin reads it back
bit for bit; the .pth holds the official keys (tied aliases included), so a
PyTorch twin built from the official module structure loads it strictly.
"""
import numpy as np
import pytest

from whitebox.interop import (export_npz, export_pth, export_safetensors, load_official,
                              read_state_dict)
from whitebox.models import BERT, GPT, MAE, ViT

from common_checks import assert_same_state

MODELS = {
    "vit": lambda seed: ViT(8, 4, 3, 8, 1, 2, seed=seed),
    "gpt": lambda seed: GPT(11, 8, 8, 1, 2, seed=seed),
    "gpt_nobias": lambda seed: GPT(11, 8, 8, 1, 2, bias=False, seed=seed),
    "mae": lambda seed: MAE(8, 2, 8, 1, 2, 12, 1, 3, seed=seed),
    "bert": lambda seed: BERT(13, 8, 8, 1, 2, 12, seed=seed),
}
WRITERS = {"safetensors": export_safetensors, "npz": export_npz, "pth": export_pth}


@pytest.mark.parametrize("fmt", list(WRITERS))
@pytest.mark.parametrize("name", list(MODELS))
def test_files_round_trip(tmp_path, name, fmt):
    if fmt == "safetensors":
        pytest.importorskip("safetensors")
    if fmt == "pth":
        pytest.importorskip("torch")
    model, other = MODELS[name](1), MODELS[name](2)
    path = WRITERS[fmt](model, tmp_path / f"m.{fmt}")
    load_official(other, path)
    assert_same_state(model, other)


def test_exported_pth_loads_strictly_into_the_torch_twins(tmp_path):
    torch = pytest.importorskip("torch")
    from torch_baselines import TorchBERT, TorchGPT, TorchMAE, TorchViT
    twins = {"vit": TorchViT(8, 4, 3, 8, 1, 2), "gpt": TorchGPT(11, 8, 8, 1, 2),
             "gpt_nobias": TorchGPT(11, 8, 8, 1, 2, bias=False),
             "mae": TorchMAE(8, 2, 8, 1, 2, 12, 1, 3), "bert": TorchBERT(13, 8, 8, 1, 2, 12)}
    for name, twin in twins.items():
        path = export_pth(MODELS[name](1), tmp_path / f"{name}.pth")
        state = torch.load(path, weights_only=True)
        own = twin.state_dict()
        extra = set(state) - set(own)
        assert not extra, f"{name}: keys the official module lacks: {sorted(extra)}"
        twin.load_state_dict(state, strict=True)


def test_a_misshaped_official_file_changes_nothing(tmp_path):
    model = MODELS["vit"](1)
    state = read_state_dict(export_npz(model, tmp_path / "v.npz"))
    state["blocks.0.attn.qkv.weight"] = state["blocks.0.attn.qkv.weight"][:8]
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="blocks.0.attn.qkv.weight"):
        load_official(model, state)
    for k, v in before.items():
        np.testing.assert_array_equal(model.state_dict()[k], v)
