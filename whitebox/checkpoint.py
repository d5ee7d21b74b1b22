"""Checkpoints: one ``.npz`` file that resumes training exactly.

A checkpoint holds, in a single NumPy ``.npz`` archive (no pickles):

    model/<name>             every model parameter (e.g. ``model/mlp_head.1.weight``)
    optim/<name>/<buffer>    the optimizer's per-parameter buffers
    __meta__                 UTF-8 JSON as a uint8 array: format name and version,
                             step, epoch, ``extra``, the optimizer's scalars
                             (type, step count, lr, hyper-parameters), the
                             schedule's state and the random generators' states

Arrays are stored on the CPU, so a checkpoint written from CuPy loads into a
NumPy model and the other way round. The file is written atomically: to a
temporary file in the same directory, flushed and fsync'ed, then moved over
the old checkpoint with ``os.replace``. A crash mid-write leaves the previous
checkpoint as it was, and at worst a temporary ``.<name>.<8 hex digits>.tmp``
beside it, which :func:`clean_stale_temporaries` removes on the next start.

Loading is all or nothing: every part (parameters, optimizer buffers and
scalars, schedule, each generator state) is checked before any object is
changed, and an error about a damaged or unfitting file names the file.
"""
import json
import os
import re
import secrets
import zipfile

import numpy as np

from .backend import to_numpy
from .functional._checks import check_array, check_finite, is_int
from .nn import Module

FORMAT = "whitebox-checkpoint"
VERSION = 1
META_KEYS = ("step", "epoch", "extra", "optimizer", "scheduler", "rng")


# ---------------------------------------------------------------- JSON helpers
def _to_json(obj):
    """Replace NumPy arrays and scalars (e.g. inside a bit generator's state) by JSON."""
    if isinstance(obj, dict):
        return {str(k): _to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": obj.dtype.str}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _from_json(obj):
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=np.dtype(obj["dtype"]))
        return {k: _from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_json(v) for v in obj]
    return obj


def _rng_states(rng):
    """The bit-generator state(s) of a Generator or a dict name -> Generator."""
    if rng is None:
        return None
    if isinstance(rng, np.random.Generator):
        return {"kind": "generator", "state": _to_json(rng.bit_generator.state)}
    if isinstance(rng, dict):
        for name, g in rng.items():
            if not isinstance(g, np.random.Generator):
                raise TypeError(f"rng[{name!r}] must be a numpy.random.Generator, "
                                f"got {type(g).__name__}")
        return {"kind": "dict",
                "states": {str(n): _to_json(g.bit_generator.state) for n, g in rng.items()}}
    raise TypeError(f"rng must be a numpy.random.Generator or a dict of name -> Generator, "
                    f"got {type(rng).__name__}")


# ---------------------------------------------------------------- writing
def _fsync_directory(directory):
    """Make the rename itself durable (POSIX); not possible everywhere, so best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{8}\.tmp")   # what atomic_write names


def _temporary_name(path):
    return f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp"


def clean_stale_temporaries(directory):
    """Remove the temporary files a killed :func:`atomic_write` left in ``directory``.

    Only regular files named like atomic_write's temporaries,
    ``.<name>.<8 hex digits>.tmp``, are removed: nothing else, no folder, no
    link, nothing in subfolders. Call it when no other process is writing
    into ``directory`` (a training run does, at its start; in a distributed
    run only the writing rank does). A temporary that is gone by the time it
    is removed (another process removed it first) is not an error.
    Returns: the sorted list of paths this call removed.
    """
    directory = os.fspath(directory)
    removed = []
    for entry in os.scandir(directory):
        if TEMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.remove(entry.path)
            except FileNotFoundError:
                continue
            removed.append(entry.path)
    return sorted(removed)


# Fault injection for the crash tests: None, or a callable ``hook(point, path)``
# that atomic_write calls at each of its steps, with point one of
#   "created"  the temporary exists, empty
#   "written"  write(f) returned; part of the data may still sit in f's buffer
#   "synced"   the temporary is complete and fsync'ed, not yet renamed
#   "renamed"  os.replace is done, the directory not yet fsync'ed
# A test sets it to kill the process at a chosen step (tests/test_distributed.py).
_fault_hook = None


def _reached(point, path):
    if _fault_hook is not None:
        _fault_hook(point, path)


def atomic_write(path, write, binary=True):
    """Call ``write(f)`` on a temporary sibling of ``path``, fsync, then os.replace it onto path.

    A crash at any moment leaves either the old file or the new one, never a
    half-written mixture, and no temporary file survives a failed write.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: directory {directory!r} does not exist")
    tmp = os.path.join(directory, _temporary_name(path))
    # O_EXCL: never clobber someone else's file; mode 0o666 lets the umask decide
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            _reached("created", path)
            write(f)
            _reached("written", path)
            f.flush()
            os.fsync(f.fileno())
        _reached("synced", path)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    _reached("renamed", path)
    _fsync_directory(directory)


def atomic_write_npz(path, arrays):
    """np.savez(path, **arrays), atomically."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _host_copy(a):
    """A NumPy array that no later in-place update of ``a`` reaches."""
    host = to_numpy(a)
    return host.copy() if host is a else host


_WRITE_ARRAYS = "a dict of arrays is written by whitebox.checkpoint.atomic_write_npz"


def _check_model(model, who, hint):
    if not isinstance(model, Module):
        raise TypeError(f"{who}: model must be a whitebox Module, got {type(model).__name__}"
                        + (f" ({hint})" if isinstance(model, dict) else ""))


def save_checkpoint(path, model, optimizer=None, *, step=0, epoch=0, rng=None, scheduler=None,
                    extra=None):
    """Write model, optimizer, schedule, counters and RNG states to ONE ``.npz``, atomically.

    Inputs: path (written exactly as given; ``.npz`` suggested); model, a
    Module; optimizer, a whitebox.optim optimizer or None; step, epoch,
    integers; rng, a numpy Generator or a dict name -> Generator (e.g. the
    data sampler's and the dropout layers'); scheduler, a whitebox.optim
    schedule or None; extra, a JSON-able dict (config, metrics, ...).
    Returns: the path.
    """
    path = os.fspath(path)
    _check_model(model, "save_checkpoint", _WRITE_ARRAYS)
    atomic_write_npz(path, checkpoint_arrays(model, optimizer, step=step, epoch=epoch, rng=rng,
                                             scheduler=scheduler, extra=extra))
    return path


def checkpoint_arrays(model, optimizer=None, *, step=0, epoch=0, rng=None, scheduler=None,
                      extra=None):
    """The arrays :func:`save_checkpoint` writes, as NumPy COPIES: the state as it is now.

    Inputs as save_checkpoint. ``atomic_write_npz(path, arrays)`` writes
    them later (the training loop does, once an epoch's evaluation in a
    second thread has ended, while the parameters have moved on).
    """
    _check_model(model, "checkpoint_arrays", _WRITE_ARRAYS)
    for name, v in (("step", step), ("epoch", epoch)):
        if not is_int(v):
            raise TypeError(f"{name} must be an integer, got {v!r}")
        if v < 0:            # a count: load_checkpoint would refuse the file as damaged
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a JSON-able dict or None, got {type(extra).__name__}")
    arrays = {f"model/{name}": _host_copy(p) for name, p in model.parameters().items()}
    meta = {"format": FORMAT, "version": VERSION, "step": int(step), "epoch": int(epoch),
            "extra": extra, "optimizer": None, "scheduler": None, "rng": _rng_states(rng)}
    if optimizer is not None:
        sd = optimizer.state_dict()
        for pname, buffers in sd.pop("state").items():
            for bname, buf in buffers.items():
                arrays[f"optim/{pname}/{bname}"] = _host_copy(buf)
        meta["optimizer"] = _to_json(sd)
    if scheduler is not None:
        meta["scheduler"] = _to_json(scheduler.state_dict())
    try:
        text = json.dumps(meta)
    except (TypeError, ValueError) as e:
        raise TypeError(f"extra must be JSON-able (plain dicts, lists, numbers, strings): {e}") \
            from None
    arrays["__meta__"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    return arrays


# ---------------------------------------------------------------- reading
def _read(path):
    """(arrays without __meta__, meta dict); clear errors for missing or damaged files."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
        meta = json.loads(arrays.pop("__meta__").tobytes().decode("utf-8"))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, AttributeError) as e:
        raise ValueError(f"{path!r} is not a whitebox checkpoint or truncated "
                         f"({type(e).__name__}: {e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a whitebox checkpoint or truncated "
                         "(no whitebox format marker)")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise ValueError(f"checkpoint {path!r} has format version {meta.get('version')!r}; "
                         f"this whitebox reads versions up to {VERSION}")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"checkpoint {path!r} is damaged: its metadata lacks {missing}")
    for name in ("step", "epoch"):
        if isinstance(meta[name], bool) or not isinstance(meta[name], int) or meta[name] < 0:
            raise ValueError(f"checkpoint {path!r} is damaged: {name} is {meta[name]!r}, "
                             "expected a non-negative integer")
    return arrays, meta


def _model_state(arrays):
    return {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}


def load_arrays(path):
    """Just the model parameters of a checkpoint: dict name -> NumPy array."""
    arrays, _ = _read(path)
    return _model_state(arrays)


def _check_model_state(path, model, state):
    """Refuse a checkpoint of another architecture before anything is overwritten."""
    params = model.parameters()
    missing = [k for k in params if k not in state]
    unexpected = [k for k in state if k not in params]
    if missing or unexpected:
        raise KeyError(f"checkpoint {path!r} does not fit {type(model).__name__}: "
                       f"missing keys {missing[:10]}, unexpected keys {unexpected[:10]}")
    for name, p in params.items():
        if tuple(state[name].shape) != tuple(p.shape):
            raise ValueError(f"checkpoint {path!r}: key {name!r} has shape "
                             f"{tuple(state[name].shape)}, the model expects {tuple(p.shape)}")
        try:
            check_array(f"key {name!r}", state[name])
            check_finite(f"key {name!r}", state[name])
        except (TypeError, ValueError) as e:
            raise _with_path(path, e) from e


def _with_path(path, error):
    """The same kind of error, its message prefixed with the checkpoint's path (once)."""
    kind = next(k for k in (KeyError, ValueError, TypeError) if isinstance(error, k))
    message = str(error.args[0]) if error.args else str(error)
    if repr(os.fspath(path)) in message:
        return kind(message)
    return kind(f"checkpoint {path!r}: {message}")


def _optimizer_state(path, optimizer, meta, arrays):
    """The optimizer's state_dict rebuilt from the file, checked against ``optimizer``."""
    if meta["optimizer"] is None:
        raise ValueError(f"checkpoint {path!r} holds no optimizer state, "
                         "but an optimizer was given")
    optim_sd = _from_json(meta["optimizer"])
    if optim_sd.get("type") != type(optimizer).__name__:
        raise ValueError(f"checkpoint {path!r} holds {optim_sd.get('type')!r} state, "
                         f"but the optimizer is {type(optimizer).__name__!r}")
    optim_sd["state"] = {}
    for key, buf in arrays.items():
        if key.startswith("optim/"):
            # parameter names may hold dots but buffer names no slash
            pname, bname = key[len("optim/"):].rsplit("/", 1)
            optim_sd["state"].setdefault(pname, {})[bname] = buf
    try:
        optimizer.check_state_dict(optim_sd)
    except (KeyError, ValueError, TypeError) as e:
        raise _with_path(path, e) from e
    return optim_sd


def _schedule_state(path, scheduler, meta):
    if meta["scheduler"] is None:
        raise ValueError(f"checkpoint {path!r} holds no schedule state, but a scheduler was given")
    try:
        scheduler.check_state_dict(meta["scheduler"])
    except (KeyError, ValueError, TypeError) as e:
        raise _with_path(path, e) from e
    return meta["scheduler"]


def _rng_pairs(path, rng, saved):
    """(generator, saved state) pairs to restore, after checking they match.

    ``rng`` may be one Generator or a dict name -> Generator; names are free
    text, so the dotted module names of ``Module.generators()`` work as keys.
    """
    if saved is None:
        raise ValueError(f"checkpoint {path!r} holds no random-generator state, "
                         "but rng was given")
    if isinstance(rng, np.random.Generator):
        if saved["kind"] != "generator":
            raise ValueError(f"checkpoint {path!r} holds a dict of generator states "
                             f"{sorted(saved['states'])}; pass rng as a dict with those names")
        pairs = [("rng", rng, saved["state"])]
    elif isinstance(rng, dict):
        if saved["kind"] != "dict":
            raise ValueError(f"checkpoint {path!r} holds one generator state; "
                             "pass rng as a single numpy.random.Generator")
        missing = sorted(set(map(str, rng)) - set(saved["states"]))
        if missing:
            raise KeyError(f"checkpoint {path!r} has no generator state for {missing}; "
                           f"it holds {sorted(saved['states'])}")
        pairs = [(f"rng[{name!r}]", g, saved["states"][str(name)]) for name, g in rng.items()]
    else:
        raise TypeError(f"rng must be a numpy.random.Generator or a dict of name -> Generator, "
                        f"got {type(rng).__name__}")
    restored = []
    for label, g, state in pairs:
        if not isinstance(g, np.random.Generator):
            raise TypeError(f"{label} must be a numpy.random.Generator, got {type(g).__name__}")
        # a PCG64 state cannot be poured into, say, a Philox generator
        have = type(g.bit_generator).__name__
        want = state.get("bit_generator") if isinstance(state, dict) else None
        if have != want:
            raise ValueError(f"checkpoint {path!r}: {label} is a {have} generator, "
                             f"the saved state is for {want}")
        # restore into a scratch generator first: a damaged state fails here,
        # before any object has been changed
        try:
            state = _from_json(state)
            type(g.bit_generator)().state = state
        except (TypeError, ValueError, KeyError, OverflowError) as e:
            raise ValueError(f"checkpoint {path!r}: the saved state of {label} is damaged "
                             f"({type(e).__name__}: {e})") from e
        restored.append((g, state))
    return restored


def load_checkpoint(path, model, optimizer=None, *, rng=None, scheduler=None):
    """Restore a :func:`save_checkpoint` file into existing objects, in place.

    The model is loaded with ``model.load_state_dict`` (cast to its dtype and
    moved to its backend); the optimizer takes the saved hyper-parameters,
    lr and step count, and its buffers follow their parameters' backend;
    generators get their saved bit-generator state back (``rng`` as given to
    :func:`save_checkpoint`, or a subset of its names).
    Raises FileNotFoundError for a missing file, ValueError for a damaged one,
    KeyError / ValueError / TypeError naming the key for a checkpoint that
    does not fit the given model, optimizer, schedule or generators.
    Everything is checked before anything is changed: a refused checkpoint
    leaves every object as it was.
    Returns: {"step": int, "epoch": int, "extra": dict or None}.
    """
    _check_model(model, "load_checkpoint", "to read the arrays themselves use "
                 "whitebox.checkpoint.load_arrays")
    arrays, meta = _read(path)
    # 1. check every part; nothing is changed yet
    try:
        state = _model_state(arrays)
        _check_model_state(path, model, state)
        optim_sd = (_optimizer_state(path, optimizer, meta, arrays)
                    if optimizer is not None else None)
        sched_sd = _schedule_state(path, scheduler, meta) if scheduler is not None else None
        rng_states = _rng_pairs(path, rng, meta["rng"]) if rng is not None else []
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        if isinstance(e, AttributeError):       # a damaged entry of the wrong JSON type
            e = ValueError(f"damaged metadata ({e})")
        raise _with_path(path, e) from e
    # 2. assign: every value was checked, so none of these refuses
    model.load_state_dict(state)
    if optimizer is not None:
        optimizer.load_state_dict(optim_sd)
    if scheduler is not None:
        scheduler.load_state_dict(sched_sd)
    for generator, saved_state in rng_states:
        generator.bit_generator.state = saved_state
    return {"step": meta["step"], "epoch": meta["epoch"], "extra": meta["extra"]}
