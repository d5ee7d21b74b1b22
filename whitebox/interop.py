"""Official CRATE weights in and out: .safetensors, .npz arrays or PyTorch .pth files.

whitebox models use the official state-dict names, so moving weights is a
matter of unwrapping the container and converting arrays.

    load_official(model, "crate_tiny.safetensors")   # safe: no code runs on reading
    load_official(model, "weights.npz")              # arrays keyed by the official names
    load_official(model, "crate_tiny.pth")           # {"state_dict": ...}, {"model": ...} or bare
    export_safetensors(model, "mine.safetensors")
    export_pth(model, "mine.pth")                    # the official code loads it as it is
    export_npz(model, "mine.npz")

The format follows the file's suffix: ``.safetensors`` is read and written
through the ``safetensors`` package's NumPy API (extra ``safetensors``; no
PyTorch needed), ``.npz`` through NumPy (a whitebox ``checkpoint.npz`` gives
its model), ``.pth``/``.pt``/``.bin``/``.ckpt`` as a PyTorch pickle (extra
``torch``; only tensors are unpickled, ``weights_only=True``). Each
package is imported here alone, lazily, with an error naming the extra when
it is missing. Every format gets the same strict checks: a missing,
unexpected or misshaped name is refused before any weight is changed.

bfloat16 and float8 weights (common on model hubs) have no NumPy dtype: they
are converted exactly to float32 (every such value is a float32), then cast
to the model's dtype, with a warning naming the file, the dtype and the keys.
A tensor of any other dtype NumPy lacks is refused naming the file and key.

Model families whose official files do not hold exactly the model's
parameters translate through two optional methods, called for EVERY format:

    model.from_official_state(state) -> state
        load_official passes the raw {name: array} through it before
        load_state_dict (e.g. a language model drops the tied alias
        ``lm_head.weight`` and the causal-mask buffers ``*.attn.bias``);
    model.to_official_state(state) -> state
        every export passes the model's {name: array} through it (and puts
        the alias and buffers back).
"""
import json
import os
import struct
import warnings
import zipfile

import numpy as np

from .backend import to_numpy
from .checkpoint import atomic_write, atomic_write_npz

_WRAPPERS = ("state_dict", "model", "model_state", "module")


def _require(package, extra, what):
    """Import an optional package, or an ImportError naming the extra that brings it."""
    import importlib
    try:
        return importlib.import_module(package)
    except ImportError as e:
        raise ImportError(f"{what} needs the {package.split('.')[0]} package, which is not "
                          f"installed: pip install 'whitebox-crate[{extra}]'") from e


def _require_torch(what):
    return _require("torch", "torch", what)


def _where(source):
    return f"{os.fspath(source)!r}: " if source is not None else ""


def _warn_bfloat16(source, keys, kind="bfloat16"):
    shown = ", ".join(repr(k) for k in keys[:5]) + (f" and {len(keys) - 5} more"
                                                     if len(keys) > 5 else "")
    warnings.warn(f"{_where(source)}{len(keys)} key(s) stored as {kind} ({shown}) were "
                  "converted exactly to float32, then to the model's dtype", stacklevel=3)


def _tensor_to_numpy(name, value, source):
    """A CPU torch tensor as a NumPy array; (array, True) when a narrow float NumPy lacks
    (bfloat16, float8) was widened exactly to float32."""
    try:
        return value.numpy(), False
    except TypeError as e:            # a dtype NumPy has no counterpart for
        if value.is_floating_point() and value.element_size() <= 2:
            return value.float().numpy(), True        # every such value is a float32
        raise TypeError(f"{_where(source)}key {name!r} has dtype {value.dtype}, which NumPy "
                        f"cannot hold ({e}); convert it in PyTorch first") from None


def unwrap_state_dict(obj, source=None):
    """Find the parameter dict inside a checkpoint and drop a ``module.`` prefix.

    Accepts {"state_dict": sd}, {"model": sd}, or a bare state dict, whose
    values are torch tensors or arrays; ``source`` (a path) only names the
    file in warnings. Returns {name: numpy array}.
    """
    if not isinstance(obj, dict):
        raise TypeError(f"a checkpoint must hold a dict, got {type(obj).__name__}")
    for key in _WRAPPERS:
        if key in obj and isinstance(obj[key], dict):
            return unwrap_state_dict(obj[key], source)
    state, narrow = {}, {}
    for name, value in obj.items():
        if not hasattr(value, "shape"):
            continue  # epoch counters, optimizer settings and the like
        if name.startswith("module."):  # saved from DataParallel / DDP
            name = name[len("module."):]
        if hasattr(value, "detach"):      # a torch tensor
            value = value.detach().cpu()
            kind = str(value.dtype).replace("torch.", "")
            value, widened = _tensor_to_numpy(name, value, source)
            if widened:
                narrow.setdefault(kind, []).append(name)
        state[name] = to_numpy(value)
    for kind, keys in narrow.items():
        _warn_bfloat16(source, keys, kind)
    if not state:
        raise ValueError("no arrays found in the checkpoint (expected a state dict)")
    return state


def _bfloat16_as_float32(raw):
    """Little-endian bfloat16 bytes -> float32: the 16 bits become a float32's top half."""
    return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)


def _read_safetensors(path):
    """{name: array} from a .safetensors file; bfloat16 entries come back as float32."""
    numpy_api = _require("safetensors.numpy", "safetensors", f"reading {path!r}")
    try:
        return numpy_api.load_file(path)
    except TypeError:          # a dtype NumPy lacks (bfloat16): read those entries by hand
        pass
    except Exception as e:     # SafetensorError for a truncated or foreign file
        raise ValueError(f"{path!r} is not a readable .safetensors file (truncated?): "
                         f"{e}") from e
    # the format: 8-byte little-endian header size, a JSON header, then the raw data
    from safetensors import safe_open
    state, bf16 = {}, []
    try:
        with open(path, "rb") as f:
            raw = f.read()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        header.pop("__metadata__", None)
        with safe_open(path, framework="numpy") as f:
            for name, info in header.items():
                if info["dtype"] == "BF16":
                    start, end = info["data_offsets"]
                    data = raw[8 + n + start:8 + n + end]
                    state[name] = _bfloat16_as_float32(data).reshape(info["shape"])
                    bf16.append(name)
                else:
                    state[name] = f.get_tensor(name)
    except Exception as e:
        raise ValueError(f"{path!r}: cannot read its tensors with NumPy ({type(e).__name__}: "
                         f"{e})") from e
    _warn_bfloat16(path, bf16)
    return state


TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def read_state_dict(path):
    """Read {name: numpy array} from a .safetensors, .npz or PyTorch .pth/.pt/.bin/.ckpt file.

    A whitebox training checkpoint (``checkpoint.npz``) gives its model's parameters.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file not found: {path!r}")
    suffix = os.path.splitext(path)[1]
    if suffix not in (".safetensors", ".npz") + TORCH_SUFFIXES:
        raise ValueError(f"{path!r}: unknown format {suffix!r}; expected .safetensors, .npz or "
                         f"a PyTorch file ({', '.join(TORCH_SUFFIXES)})")
    if path.endswith(".safetensors"):
        return unwrap_state_dict(_read_safetensors(path), path)
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise ValueError(f"{path!r} is not a readable .npz file (truncated?): {e}") from e
        if any(k.startswith("model/") for k in arrays):   # a whitebox training checkpoint
            arrays = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
        return unwrap_state_dict(arrays, path)
    torch = _require_torch(f"reading {path!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path!r} is not a readable PyTorch checkpoint (truncated?): {e}") from e
    return unwrap_state_dict(obj, path)


def _through_hook(model, hook, state):
    """state, passed through ``model.<hook>`` when the model defines it."""
    fn = getattr(model, hook, None)
    if fn is None:
        return state
    out = fn(dict(state))
    if not isinstance(out, dict):
        raise TypeError(f"{type(model).__name__}.{hook} must return a dict of name -> array, "
                        f"got {type(out).__name__}")
    return out


def load_official(model, source, strict=True):
    """Load official weights into ``model`` (a path to .safetensors/.npz/.pth, or a dict).

    The state goes through ``model.from_official_state`` when the model
    defines it. Errors name missing, unexpected or misshaped keys (from
    load_state_dict), and nothing is changed when one is refused.
    Returns the model.
    """
    if not isinstance(source, (dict, str, os.PathLike)):
        raise TypeError(f"source must be a path or a dict of arrays, got {type(source).__name__}")
    state = unwrap_state_dict(source) if isinstance(source, dict) else read_state_dict(source)
    model.load_state_dict(_through_hook(model, "from_official_state", state), strict=strict)
    return model


def official_state(model):
    """The model's {official name: NumPy array}, through ``model.to_official_state`` if defined."""
    state = {k: np.ascontiguousarray(to_numpy(v)) for k, v in model.state_dict().items()}
    return _through_hook(model, "to_official_state", state)


def to_torch_state_dict(model):
    """{name: torch.Tensor} in the model's dtype, on the CPU (through to_official_state)."""
    torch = _require_torch("to_torch_state_dict")
    return {k: torch.from_numpy(np.array(v)) for k, v in official_state(model).items()}


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
    atomic_write_npz(path, official_state(model))
    return path


def export_safetensors(model, path):
    """Write the parameters as a .safetensors keyed by the official names (atomically).

    The header's metadata says ``format: pt``, the value PyTorch-side loaders
    (e.g. the Hugging Face ones) look for; the data itself is framework-neutral.
    """
    numpy_api = _require("safetensors.numpy", "safetensors", "export_safetensors")
    data = numpy_api.save(official_state(model), metadata={"format": "pt"})
    atomic_write(path, lambda f: f.write(data))
    return path
