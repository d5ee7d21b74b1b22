"""The Module base: named parameters, gradients, one cache, state dicts.

A Module holds its own parameters in ``self._params`` and their gradients in
``self._grads`` (same keys), and its children in ``self._modules``. Dotted
names are composed the way PyTorch composes them, so a parameter ``weight``
of child ``qkv`` of child ``fn`` reads ``fn.qkv.weight``. ``forward`` keeps a
cache; ``backward(dout)`` consumes it, ADDS into the gradients (so a weight
used twice gets both contributions) and returns the gradient of the input.
"""
import copy

import numpy as np

from .. import backend
from ..backend import get_array_module
from ..functional._checks import check_probability, is_int

DTYPES = ("float32", "float64")


def check_dtype(dtype):
    """Normalise a dtype argument to 'float32' or 'float64'."""
    try:
        name = np.dtype(dtype).name if dtype is not None else None
    except TypeError:
        name = None
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return name


class Module:
    """Base class of every layer and model in whitebox."""

    def __init__(self, dtype="float32"):
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_grads", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_frozen", set())
        self.dtype = check_dtype(dtype)
        self.training = True
        self._cache = None

    # ----------------------------------------------------------- registration
    def __setattr__(self, name, value):
        if isinstance(value, Module):
            self._modules[name] = value
        elif name in self.__dict__.get("_modules", {}):
            del self._modules[name]
        object.__setattr__(self, name, value)

    def add_param(self, name, value, trainable=True):
        """Register a parameter (an array, created on the CPU and moved here).

        trainable=False freezes it (as torch's requires_grad=False): it stays in
        state_dict() and checkpoints, but grads() and optimizers skip it.
        """
        if "." in name:
            raise ValueError(f"parameter name must not contain '.', got {name!r}")
        if get_array_module(value) is np:
            # created on the CPU: cast first, so float64 draws never upcast the model
            value = backend.to_device(np.asarray(value, dtype=self.dtype),
                                      backend.default_backend())
        else:
            value = value.astype(self.dtype, copy=False)
        self._params[name] = value
        xp = get_array_module(value)
        self._grads[name] = xp.zeros_like(value)
        if not trainable:
            self._frozen.add(name)
        return value

    def param(self, name):
        return self._params[name]

    def grad(self, name):
        return self._grads[name]

    # ------------------------------------------------------------ traversal
    def named_modules(self, prefix=""):
        """Yield (dotted name, module) for this module and every descendant."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def children(self):
        return list(self._modules.values())

    def _named_slots(self, trainable_only=False):
        for mname, mod in self.named_modules():
            for pname in mod._params:
                if not (trainable_only and pname in mod._frozen):
                    yield (f"{mname}.{pname}" if mname else pname), mod, pname

    def parameters(self):
        """Dict of dotted name -> parameter array (the live arrays, not copies)."""
        return {full: mod._params[p] for full, mod, p in self._named_slots()}

    def freeze(self):
        """Make every parameter of this module and its children non-trainable; returns self."""
        for _, mod in self.named_modules():
            mod._frozen.update(mod._params)
        return self

    def trainable_parameters(self):
        """parameters() without the frozen ones: what optimizers update."""
        return {full: mod._params[p] for full, mod, p in self._named_slots(True)}

    def grads(self):
        """Dict of dotted name -> gradient array, keyed like trainable_parameters()
        (exactly like state_dict() when nothing is frozen)."""
        return {full: mod._grads[p] for full, mod, p in self._named_slots(True)}

    def state_dict(self):
        """Dict of dotted name -> parameter array (live arrays; copy to keep)."""
        return self.parameters()

    def generators(self):
        """Dict of dotted module name -> the numpy Generator it draws dropout masks from.

        Save them with the model to resume a run with dropout exactly:
        ``save_checkpoint(path, model, opt, rng={"data": rng, **model.generators()})``.
        """
        gens = {}
        for name, mod in self.named_modules():
            g = mod.__dict__.get("rng")
            if isinstance(g, np.random.Generator) and all(g is not h for h in gens.values()):
                gens[name or "."] = g
        return gens

    def num_params(self):
        return int(sum(int(np.prod(a.shape)) for a in self.parameters().values()))

    # -------------------------------------------------------------- loading
    def load_state_dict(self, state, strict=True):
        """Copy arrays from ``state`` into the parameters, in place.

        Arrays may live on either backend and in any float dtype; they are
        cast to this module's dtype and backend. With ``strict`` a missing or
        unexpected key raises KeyError; a misshaped one always raises
        ValueError naming the key and both shapes.
        """
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict of arrays, got {type(state).__name__}")
        slots = {full: (mod, p) for full, mod, p in self._named_slots()}
        missing = [k for k in slots if k not in state]
        unexpected = [k for k in state if k not in slots]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys {missing[:10]}" + (" ..." if len(missing) > 10 else ""))
            if unexpected:
                parts.append(f"unexpected keys {unexpected[:10]}"
                             + (" ..." if len(unexpected) > 10 else ""))
            raise KeyError(f"load_state_dict into {type(self).__name__}: " + "; ".join(parts))
        # validate every key before copying any, so a bad state dict changes nothing
        ready = []
        for key, (mod, p) in slots.items():
            if key not in state:
                continue
            src, dst = state[key], mod._params[p]
            if not isinstance(src, np.ndarray) and get_array_module(src) is np:
                kind = f"{type(src).__module__}.{type(src).__name__}"
                raise TypeError(f"load_state_dict: key {key!r} must hold a NumPy or CuPy "
                                f"array, got {kind}" + (
                                    " (convert with t.numpy(), or read an official "
                                    "checkpoint with whitebox.interop.load_official)"
                                    if kind.startswith("torch") else ""))
            if tuple(src.shape) != tuple(dst.shape):
                raise ValueError(f"load_state_dict: key {key!r} has shape {tuple(src.shape)}, "
                                 f"expected {tuple(dst.shape)}")
            if src.dtype.kind != "f":
                raise TypeError(f"load_state_dict: key {key!r} has dtype {src.dtype}, "
                                "expected floating point")
            xp = get_array_module(dst)
            if get_array_module(src) is not xp:
                src = backend.to_device(backend.to_numpy(src), backend.backend_name(dst))
            with np.errstate(over="ignore"):             # float64 beyond float32: inf, refused
                src = src.astype(dst.dtype, copy=False)
            if not bool(xp.all(xp.isfinite(src))):
                raise ValueError(f"load_state_dict: key {key!r} holds NaN or infinite values"
                                 f" (in the model's {dst.dtype})")
            ready.append((src, dst))
        for src, dst in ready:
            dst[...] = src
        return {"missing": missing, "unexpected": unexpected}

    # ------------------------------------------------------------ state
    def zero_grad(self):
        for mod in (m for _, m in self.named_modules()):
            for g in mod._grads.values():
                g.fill(0)

    def train(self, mode=True):
        for _, mod in self.named_modules():
            mod.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def draws_in_training(self):
        """True when a training forward of this module or a child draws random numbers
        (dropout with p > 0, CRATE-MAE's patch masks) from the module's generators."""
        return self._draws() or any(c.draws_in_training() for c in self._modules.values())

    def _draws(self):
        """This module's own part of draws_in_training (subclasses that draw override it)."""
        return False

    def replica(self):
        """A twin that SHARES this module's parameter arrays but has its own gradients and caches.

        Used to run one shard of a batch in another thread (whitebox.training.threaded):
        the twin's forward and backward never touch this module's caches or gradients,
        while an optimizer step on this module moves the twin's parameters too (the
        arrays are the same objects). Generators are shared as well: a twin that draws
        needs its own (ShardThreads points each twin's ``rng`` at a generator derived
        for its shard at every step). Attributes that refer to modules of the tree
        (a weight tied through a module reference) are pointed at their twins.
        """
        twins = {}
        copy = self._replicate(twins)
        for twin in twins.values():
            for name, value in list(twin.__dict__.items()):
                if isinstance(value, Module) and id(value) in twins:
                    object.__setattr__(twin, name, twins[id(value)])
        return copy

    def snapshot(self):
        """A twin that shares NOTHING that training changes: the model as it is now.

        Its parameters are copies (a weight tied between two modules stays
        one array) and its generators copies, so it can be evaluated in
        another thread while this module trains on (whitebox.training.loop
        does), and gives the numbers this module would have given now.
        """
        twin, copies = self.replica(), {}
        for _, mod in twin.named_modules():
            params = {}
            for name, value in mod._params.items():
                if id(value) not in copies:
                    copies[id(value)] = value.copy()
                params[name] = copies[id(value)]
            object.__setattr__(mod, "_params", params)
            rng = mod.__dict__.get("rng")
            if isinstance(rng, np.random.Generator):
                if id(rng) not in copies:
                    copies[id(rng)] = copy.deepcopy(rng)
                object.__setattr__(mod, "rng", copies[id(rng)])
        return twin

    def _replicate(self, twins):
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)          # shallow: the same _params dict and arrays
        object.__setattr__(twin, "_grads", {name: get_array_module(g).zeros_like(g)
                                            for name, g in self._grads.items()})
        object.__setattr__(twin, "_modules", {name: child._replicate(twins)
                                              for name, child in self._modules.items()})
        twin.__dict__.update(twin._modules)
        object.__setattr__(twin, "_cache", None)
        twins[id(self)] = twin
        return twin

    def to(self, backend_name):
        """Move every parameter and gradient to 'numpy' or 'cupy' (in place)."""
        backend.xp_of(backend_name)  # a clear error before anything moves
        for _, mod in self.named_modules():
            for p in list(mod._params):
                mod._params[p] = backend.to_device(mod._params[p], backend_name)
                mod._grads[p] = backend.to_device(mod._grads[p], backend_name)
            mod._cache = None
        return self

    @property
    def backend(self):
        for _, mod, name in self._named_slots():        # the first parameter says
            return backend.backend_name(mod._params[name])
        return backend.default_backend()

    @property
    def xp(self):
        return backend.xp_of(self.backend)

    # ------------------------------------------------------------ compute
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def backward(self, dout):
        raise NotImplementedError(f"{type(self).__name__} does not define backward")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def _take_cache(self):
        """Return the cache of the last forward and drop it (one backward per forward)."""
        cache = self._cache
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward "
                               "(or twice for one forward): run forward first")
        self._cache = None
        return cache

    def _accumulate(self, name, g):
        if g is not None:
            self._grads[name] += g

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            sub = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"


class DropoutAttention(Module):
    """A self-attention module that drops its attention weights with probability
    ``dropout`` in training (draws from ``rng``) and keeps the last weights
    (B, K, T, T) in ``last_attention``; subclasses call ``_init_attention``."""

    def _init_attention(self, dropout, rng):
        self.dropout = check_probability("dropout", dropout)
        self.rng = rng
        self.last_attention = None

    def _draws(self):
        return self.dropout > 0


def _child_at(container, i):
    """The i-th child of a Sequential or ModuleList (negative i counts from the end)."""
    n = len(container._modules)
    if not is_int(i):
        raise TypeError(f"{type(container).__name__} index must be an integer, got {i!r}")
    if not -n <= i < n:
        raise IndexError(f"{type(container).__name__} index {i!r} out of range "
                         f"for {n} modules")
    return container._modules[str(int(i) % n)]


class ModuleList(Module):
    """A list of children named '0', '1', ...; it has no forward of its own."""

    def __init__(self, modules=(), dtype="float32"):
        super().__init__(dtype)
        for m in modules:
            self.append(m)

    def append(self, m):
        setattr(self, str(len(self._modules)), m)

    def __getitem__(self, i):
        return _child_at(self, i)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class Sequential(ModuleList):
    """Children named '0', '1', ... run in order; backward in reverse."""

    def __init__(self, *modules, dtype="float32"):
        super().__init__(modules, dtype)

    def forward(self, x):
        for m in self:
            x = m(x)
        return x

    def backward(self, dout):
        for m in reversed(list(self)):
            dout = m.backward(dout)
        return dout
