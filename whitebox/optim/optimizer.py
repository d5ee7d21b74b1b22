"""The Optimizer base: where parameters come from, which ones decay, resumable state.

An optimizer updates parameters IN PLACE from their gradients. It is given
either a Module (each step then reads ``module.parameters()`` and
``module.grads()`` afresh, so moving the model with ``model.to("cupy")``
after building the optimizer still works) or a dict ``name -> array`` of
parameters together with ``grads=`` a dict with the same keys.

Weight decay is not applied to every parameter. The rule (see
:func:`decay_mask`): a parameter is NOT decayed when

  * it has fewer than 2 dimensions (biases, LayerNorm gains and shifts), or
  * its dotted name matches one of the fnmatch patterns in ``no_decay``, or
  * (Module input only) it belongs to a ``whitebox.nn.Embedding`` table.

Everything else (Linear weights, ``to_patch_embedding.2.weight``, the ISTA
dictionary ``transformer.layers.i.1.fn.weight``) is decayed.

Per-parameter buffers (momentum, Adam moments) live in ``self.state``, a
dict ``name -> {buffer name -> array}`` keyed by the parameter names, on the
parameter's backend and in its dtype.
"""
from fnmatch import fnmatchcase
from types import MappingProxyType

from .. import backend
from ..backend import get_array_module
from ..functional._checks import check_array, check_finite, check_int, check_real

# Names that mark parameters which should never be pulled towards zero: the
# learned position table and class token of a ViT/CRATE, normalisation
# parameters, biases, and token-embedding tables under the usual GPT names.
# "*embedding*.weight" is deliberately absent: it would catch
# "to_patch_embedding.2.weight", a Linear weight that should decay.
DEFAULT_NO_DECAY = (
    "*bias",
    "*norm*",
    "*pos_embedding*",
    "*cls_token*",
    "*wte.weight",
    "*wpe.weight",
    "*tok_emb.weight",
    "*pos_emb.weight",
    "*token_embedding.weight",
    "*embed_tokens.weight",
)


def _check_patterns(no_decay):
    if isinstance(no_decay, str):  # a lone string would be iterated letter by letter
        no_decay = (no_decay,)
    no_decay = tuple(no_decay)
    for pat in no_decay:
        if not isinstance(pat, str):
            raise TypeError(f"no_decay must be a tuple of fnmatch pattern strings, "
                            f"got an element {pat!r}")
    return no_decay


def decay_mask(params, no_decay=DEFAULT_NO_DECAY):
    """Which parameters get weight decay: name -> True (decayed) / False (exempt).

    decays(name, p) = p.ndim >= 2 and no pattern in ``no_decay`` matches name
                      (and, for a Module, p is not an Embedding table).
    Inputs: params, a Module or a dict name -> array; no_decay, a tuple of
    fnmatch patterns matched against the whole dotted name (case-sensitive).
    Returns: dict name -> bool, in the order of ``params``.
    """
    from ..nn.layers import Embedding
    from ..nn.module import Module

    no_decay = _check_patterns(no_decay)
    embedding_names = set()
    if isinstance(params, Module):
        for mname, mod in params.named_modules():
            if isinstance(mod, Embedding):
                embedding_names.update(f"{mname}.{p}" if mname else p for p in mod._params)
        params = params.parameters()
    elif not isinstance(params, dict):
        raise TypeError(f"params must be a Module or a dict of name -> array, "
                        f"got {type(params).__name__}")
    return {name: (p.ndim >= 2 and name not in embedding_names
                   and not any(fnmatchcase(name, pat) for pat in no_decay))
            for name, p in params.items()}


def check_hyper(name, value, low=0.0, high=None, high_open=False):
    """A finite float hyper-parameter in [low, high] (or [low, high) when high_open)."""
    return check_real(name, value, low, high, high_open=high_open)


def check_betas(name, betas):
    """A pair (beta1, beta2), each in [0, 1)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{name} must be a pair (beta1, beta2), got {betas!r}")
    return (check_hyper(f"{name}[0]", betas[0], 0.0, 1.0, high_open=True),
            check_hyper(f"{name}[1]", betas[1], 0.0, 1.0, high_open=True))


class HyperParameter:
    """An optimizer attribute checked on EVERY assignment, not only at construction.

    ``opt.lr = float("inf")`` (by hand or by a schedule) raises like a bad
    constructor argument and leaves the old value. ``check(name, value)``
    returns the value to keep; after it, the optimizer's ``check_together``
    sees all hyper-parameters at once (rules such as "nesterov needs momentum").
    """

    def __init__(self, check=check_hyper):
        self.check = check

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, opt, owner=None):
        if opt is None:
            return self
        return opt._hyper[self.name]

    def __set__(self, opt, value):
        values = dict(getattr(opt, "_hyper", {}))
        values[self.name] = self.check(self.name, value)
        opt.check_together(values)
        opt._hyper = values


class Optimizer:
    """Base class: subclasses declare their hyper-parameters as
    :class:`HyperParameter` class attributes, and define ``_update`` and, when
    some buffers depend on the hyper-parameters, ``buffers_for``.

    Attributes: ``lr`` (settable; schedules write it), the subclass's
    hyper-parameters (settable, e.g. ``opt.weight_decay``), every assignment
    checked; ``hyper`` (a read-only view of them, lr excluded); ``step_count``
    (updates done so far), ``state`` (per-parameter buffers), ``decays`` (the
    :func:`decay_mask` of the parameters).
    """

    #: names of the per-parameter buffers, in the order _update reads them
    buffer_names = ()
    lr = HyperParameter()

    def __init__(self, params, lr, grads=None, no_decay=DEFAULT_NO_DECAY):
        from ..nn.module import Module

        if isinstance(params, Module):
            if grads is not None:
                raise ValueError("grads must be None when params is a Module "
                                 "(its gradients are read from module.grads())")
            self.module = params
            self._params = self._grads = None
        elif isinstance(params, dict):
            if not isinstance(grads, dict):
                raise ValueError("params is a dict, so grads must be a dict with the same keys, "
                                 f"got grads={type(grads).__name__}")
            if set(grads) != set(params):
                raise KeyError(f"grads keys must equal params keys: missing "
                               f"{sorted(set(params) - set(grads))}, unexpected "
                               f"{sorted(set(grads) - set(params))}")
            for name, p in params.items():
                if tuple(grads[name].shape) != tuple(p.shape):
                    raise ValueError(f"grad {name!r} has shape {tuple(grads[name].shape)}, "
                                     f"expected the parameter's {tuple(p.shape)}")
            self.module = None
            self._params, self._grads = params, grads
        else:
            raise TypeError(f"params must be a Module or a dict of name -> array, "
                            f"got {type(params).__name__}")
        self.lr = lr
        self.no_decay = _check_patterns(no_decay)
        self.decays = decay_mask(params, self.no_decay)
        self.step_count = 0
        self.state = {}

    # ------------------------------------------------------------ parameters
    def parameters(self):
        """The live parameter arrays, name -> array (read afresh every call); a
        Module's frozen parameters are not among them."""
        return self.module.trainable_parameters() if self.module is not None else self._params

    def grads(self):
        """The live gradient arrays, name -> array."""
        return self.module.grads() if self.module is not None else self._grads

    def zero_grad(self):
        """Fill every gradient with 0 (backward ADDS into gradients)."""
        for g in self.grads().values():
            g.fill(0)

    def _buffers(self, name, p):
        """This parameter's buffers, created as zeros or moved to p's backend and dtype."""
        bufs = self.state.setdefault(name, {})
        xp = get_array_module(p)
        for key in self.buffers_for(self.hyper):
            buf = bufs.get(key)
            if buf is None:
                bufs[key] = xp.zeros_like(p)
            elif get_array_module(buf) is not xp or buf.dtype != p.dtype:
                bufs[key] = _to_like(buf, p)
        return bufs

    # ------------------------------------------------------------ stepping
    def step(self):
        """One update of every parameter from its current gradient, in place."""
        self.step_count += 1
        params, grads = self.parameters(), self.grads()
        for name, p in params.items():
            self._update(name, p, grads[name], self._buffers(name, p),
                         self.weight_decay if self.decays.get(name, False) else 0.0)

    def _update(self, name, p, g, bufs, weight_decay):
        raise NotImplementedError(f"{type(self).__name__} does not define _update")

    # ------------------------------------------------------------ hyper-parameters
    @classmethod
    def hyper_names(cls):
        """The names of the class's hyper-parameters other than lr, in declaration order."""
        names = []
        for klass in reversed(cls.__mro__):
            names += [k for k, v in vars(klass).items()
                      if isinstance(v, HyperParameter) and k != "lr" and k not in names]
        return tuple(names)

    @classmethod
    def make_hyper(cls, **values):
        """Every hyper-parameter but lr, checked, from keyword arguments (nothing is set)."""
        names = cls.hyper_names()
        if set(values) != set(names):
            raise TypeError(f"{cls.__name__} takes hyper-parameters {list(names)}, got "
                            f"{sorted(values)}")
        hyper = {name: getattr(cls, name).check(name, values[name]) for name in names}
        cls.check_together(hyper)
        return hyper

    @staticmethod
    def check_together(hyper):
        """Rules that involve several hyper-parameters (none here; SGD has one)."""

    @property
    def hyper(self):
        """A read-only view {name: value} of the hyper-parameters other than lr."""
        return MappingProxyType({k: v for k, v in self._hyper.items() if k != "lr"})

    @hyper.setter
    def hyper(self, values):
        checked = self.make_hyper(**values)
        self._hyper = {"lr": self._hyper["lr"], **checked}

    def buffers_for(self, hyper):
        """Names of the buffers kept under ``hyper`` (SGD keeps none without momentum)."""
        return self.buffer_names

    # ------------------------------------------------------------ resuming
    def state_dict(self):
        """Everything needed to resume exactly; arrays are copies on their backend.

        Returns: {"type": class name, "step": int, "lr": float, "hyper": dict,
        "no_decay": list, "state": {param name: {buffer name: array}}}.
        """
        return {"type": type(self).__name__,
                "step": self.step_count,
                "lr": float(self.lr),
                "hyper": {k: (list(v) if isinstance(v, tuple) else v)
                          for k, v in self.hyper.items()},
                "no_decay": list(self.no_decay),
                "state": {name: {k: b.copy() for k, b in bufs.items()}
                          for name, bufs in self.state.items()}}

    def check_state_dict(self, sd):
        """Validate a :meth:`state_dict` against this optimizer WITHOUT changing anything.

        The saved hyper-parameters replace this optimizer's on loading (as in
        torch), so an SGD built with momentum=0 takes a checkpoint's
        momentum=0.9 together with its momentum buffers.
        Raises TypeError / ValueError / KeyError naming the offending entry.
        Returns: the checked scalars {"hyper", "lr", "step_count", "no_decay",
        "decays"}; buffers are checked but not copied.
        """
        name = type(self).__name__
        if not isinstance(sd, dict) or "type" not in sd:
            raise TypeError("load_state_dict expects a dict made by Optimizer.state_dict(), "
                            f"got {type(sd).__name__}")
        if sd["type"] != name:
            raise ValueError(f"state_dict is for optimizer {sd['type']!r}, but this is {name!r}")
        missing = [k for k in ("step", "lr", "hyper", "no_decay", "state") if k not in sd]
        if missing:
            raise KeyError(f"optimizer state_dict lacks {missing}")
        saved = sd["hyper"]
        if not isinstance(saved, dict) or set(saved) != set(self.hyper):
            got = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
            raise KeyError(f"state_dict hyper-parameters {got} do not match "
                           f"{name}'s {sorted(self.hyper)}")
        hyper = self.make_hyper(**saved)   # the same checks as the constructor
        step = check_int("state_dict 'step'", sd["step"], 0)
        lr = check_hyper("state_dict 'lr'", sd["lr"])
        no_decay = _check_patterns(sd["no_decay"])

        params = self.parameters()
        if not isinstance(sd["state"], dict):
            raise TypeError(f"state_dict 'state' must be a dict, got {type(sd['state']).__name__}")
        unknown = sorted(set(sd["state"]) - set(params))
        if unknown:
            raise KeyError(f"optimizer state_dict holds buffers for unknown parameters "
                           f"{unknown[:10]}")
        kept = self.buffers_for(hyper)
        for pname, bufs in sd["state"].items():
            extra = sorted(set(bufs) - set(kept))
            if extra:
                raise KeyError(f"optimizer state for {pname!r} has unexpected buffers {extra}, "
                               f"{name} with {hyper} keeps {list(kept)}")
            p = params[pname]
            for key, buf in bufs.items():
                if not hasattr(buf, "shape"):
                    raise TypeError(f"optimizer buffer {pname!r}/{key!r} must be an array, "
                                    f"got {type(buf).__name__}")
                if tuple(buf.shape) != tuple(p.shape):
                    raise ValueError(f"optimizer buffer {pname!r}/{key!r} has shape "
                                     f"{tuple(buf.shape)}, expected {tuple(p.shape)}")
                # a NaN moment would turn every later update into NaN, like a NaN weight
                check_array(f"optimizer buffer {pname!r}/{key!r}", buf)
                check_finite(f"optimizer buffer {pname!r}/{key!r}", buf)
        decays = decay_mask(self.module if self.module is not None else params, no_decay)
        return {"hyper": hyper, "lr": lr, "step_count": step, "no_decay": no_decay,
                "decays": decays}

    def load_state_dict(self, sd):
        """Restore from :meth:`state_dict` (buffers may come from either backend).

        Everything is checked first (:meth:`check_state_dict`); a refused
        state_dict leaves the optimizer as it was.
        """
        checked = self.check_state_dict(sd)
        params = self.parameters()
        state = {pname: {key: _to_like(buf, params[pname]) for key, buf in bufs.items()}
                 for pname, bufs in sd["state"].items()}
        self.hyper = checked["hyper"]
        self.lr = checked["lr"]
        self.step_count = checked["step_count"]
        self.no_decay = checked["no_decay"]
        self.decays = checked["decays"]
        self.state = state

    def __repr__(self):
        hyper = ", ".join(f"{k}={v}" for k, v in self.hyper.items())
        return f"{type(self).__name__}(lr={self.lr}, {hyper})"


def _to_like(buf, p):
    """A copy of ``buf`` on p's backend in p's dtype."""
    xp = get_array_module(p)
    if get_array_module(buf) is not xp:
        buf = backend.to_device(backend.to_numpy(buf), backend.backend_name(p))
    return buf.astype(p.dtype, copy=True)
