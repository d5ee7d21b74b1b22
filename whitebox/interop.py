"""Official CRATE weights in and out: .npz arrays or PyTorch .pth files.

whitebox models use the official state-dict names, so moving weights is a
matter of unwrapping the container and converting arrays. PyTorch is needed
only to read or write .pth files, and is imported here alone, lazily.

    load_official(model, "crate_tiny.pth")      # {"state_dict": ...}, {"model": ...} or bare
    load_official(model, "weights.npz")         # arrays keyed by the official names
    export_pth(model, "mine.pth")               # the official code loads it with load_state_dict
"""
import os
import zipfile

import numpy as np

from .backend import to_numpy
from .checkpoint import atomic_write, atomic_write_npz

_WRAPPERS = ("state_dict", "model", "model_state", "module")


def _require_torch(what):
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"{what} needs PyTorch, which is not installed: "
                          "pip install 'whitebox-crate[torch]'") from e
    return torch


def unwrap_state_dict(obj):
    """Find the parameter dict inside a checkpoint and drop a ``module.`` prefix.

    Accepts {"state_dict": sd}, {"model": sd}, or a bare state dict, whose
    values are torch tensors or arrays. Returns {name: numpy array}.
    """
    if not isinstance(obj, dict):
        raise TypeError(f"a checkpoint must hold a dict, got {type(obj).__name__}")
    for key in _WRAPPERS:
        if key in obj and isinstance(obj[key], dict):
            return unwrap_state_dict(obj[key])
    state = {}
    for name, value in obj.items():
        if not hasattr(value, "shape"):
            continue  # epoch counters, optimizer settings and the like
        if name.startswith("module."):  # saved from DataParallel / DDP
            name = name[len("module."):]
        if hasattr(value, "detach"):      # a torch tensor
            value = value.detach().cpu().numpy()
        state[name] = to_numpy(value)
    if not state:
        raise ValueError("no arrays found in the checkpoint (expected a state dict)")
    return state


def read_state_dict(path):
    """Read {name: numpy array} from an official .pth/.pt or a .npz file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file not found: {path!r}")
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise ValueError(f"{path!r} is not a readable .npz file (truncated?): {e}") from e
        return unwrap_state_dict(arrays)
    torch = _require_torch(f"reading {path!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path!r} is not a readable PyTorch checkpoint (truncated?): {e}") from e
    return unwrap_state_dict(obj)


def load_official(model, source, strict=True):
    """Load official weights into ``model`` (a path to .pth/.npz, or a dict).

    Errors name missing, unexpected or misshaped keys (from load_state_dict).
    Returns the model.
    """
    state = unwrap_state_dict(source) if isinstance(source, dict) else read_state_dict(source)
    model.load_state_dict(state, strict=strict)
    return model


def to_torch_state_dict(model):
    """{name: torch.Tensor} in the model's dtype, on the CPU."""
    torch = _require_torch("to_torch_state_dict")
    return {k: torch.from_numpy(np.ascontiguousarray(to_numpy(v)))
            for k, v in model.state_dict().items()}


def export_pth(model, path, wrap=None):
    """Write the model's parameters to a .pth the official code loads.

    wrap=None writes a bare state dict (``model.load_state_dict(torch.load(p))``);
    wrap="state_dict" or "model" nests it under that key. Written atomically.
    """
    torch = _require_torch("export_pth")
    sd = to_torch_state_dict(model)
    obj = sd if wrap is None else {wrap: sd}
    atomic_write(path, lambda f: torch.save(obj, f))
    return path


def export_npz(model, path):
    """Write the parameters as a .npz keyed by the official names (atomically)."""
    atomic_write_npz(path, {k: to_numpy(v) for k, v in model.state_dict().items()})
    return path
