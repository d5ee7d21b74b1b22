"""Building a twin from a whitebox model: its config as constructor arguments, its weights."""
import numpy as np
import torch


def twin_of(torch_cls, model, state=None, **extra):
    """``torch_cls(**model.config, **extra)`` in the model's dtype (the config's ``seed``
    dropped), holding ``state`` (default: the model's state dict) under the same names."""
    from ..backend import to_numpy
    cfg = dict(model.config)
    dtype = torch.float64 if cfg.pop("dtype") == "float64" else torch.float32
    cfg.pop("seed", None)
    tm = torch_cls(**cfg, **extra).to(dtype)
    state = model.state_dict() if state is None else state
    tm.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(to_numpy(v)).copy())
                        for k, v in state.items()}, strict=True)
    return tm
