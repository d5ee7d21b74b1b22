"""The runner: the only process that executes a submission's code.

    python -I -S runner.py          (started by whitebox.course.judge, never by hand)

It imports nothing of the grader: only the standard library, NumPy and,
through ``sys.path``, the submission's own ``whitebox``. The judge sends
requests on stdin and reads answers on the pipe that was stdout (the
submission's prints go to stderr). A request asks for one thing: call a
function of the submission, make an object of one of its classes, call a
method or read an attribute of an object made earlier (kept here behind a
handle), or make a stand-in layer. Arrays travel as ``.npy`` bytes
(``np.load(allow_pickle=False)``), everything else as JSON; nothing is ever
pickled. The same file gives the judge its codec (``send``/``receive``) and the
stand-in layer, so both sides agree byte for byte.

Message: 4-byte big-endian length, a JSON header, then for each of the
header's ``arrays`` an 8-byte length and one ``.npy`` file. In the JSON, an
array is {"$a": i}, a tuple {"$t": [...]}, a dict {"$d": {...}}, a dtype
{"$dtype": "float64"}, an object kept in the runner {"$h": id, "type": name};
lists, strings, numbers, booleans and None are themselves.
"""
import io
import json
import math
import os
import struct
import sys

MAX_JSON = 4 << 20              # bytes of one JSON header
MAX_ARRAY = 64 << 20            # bytes of one array
MAX_TOTAL = 256 << 20           # bytes of one message
MAX_ARRAYS = 4096
MAX_DEPTH = 32
DTYPE_KINDS = "biuf"            # bool, ints, floats: no objects, strings or complex


class ProtocolError(Exception):
    """A message that breaks the format or its limits."""


# ------------------------------------------------------------------ codec
def encode(value, keep=None, arrays=None, depth=0):
    """(json-able structure, [arrays]); objects that are not data go to ``keep`` (a
    function object -> handle id) or raise ProtocolError when keep is None."""
    import numpy as np
    arrays = [] if arrays is None else arrays
    if depth > MAX_DEPTH:
        raise ProtocolError("a value nested deeper than 32 levels")
    if value is None or isinstance(value, (bool, str)):
        return value, arrays
    if isinstance(value, int):
        return value, arrays
    if isinstance(value, float):
        return (value if math.isfinite(value) else {"$f": repr(value)}), arrays
    if isinstance(value, np.dtype):
        return {"$dtype": value.str}, arrays
    if isinstance(value, (np.ndarray, np.generic)) and np.asarray(value).dtype.kind in DTYPE_KINDS:
        value = np.asarray(value)
        arrays.append(value if value.flags.c_contiguous else value.copy(order="C"))
        return {"$a": len(arrays) - 1}, arrays
    if isinstance(value, _Kept) and keep is not None:
        return {"$h": keep(value.obj), "type": type(value.obj).__name__}, arrays
    if isinstance(value, tuple):
        return {"$t": [encode(v, keep, arrays, depth + 1)[0] for v in value]}, arrays
    if isinstance(value, list):
        return [encode(v, keep, arrays, depth + 1)[0] for v in value], arrays
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"$d": {k: encode(v, keep, arrays, depth + 1)[0] for k, v in value.items()}}, \
            arrays
    if keep is None:
        raise ProtocolError(f"a {type(value).__name__} cannot be sent")
    return {"$h": keep(value), "type": type(value).__name__}, arrays


def decode(tree, arrays, handle=None, depth=0):
    """The inverse of encode; handles become ``handle(id, type)`` (an object or a proxy)."""
    import numpy as np
    if depth > MAX_DEPTH:
        raise ProtocolError("a value nested deeper than 32 levels")
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    if isinstance(tree, list):
        return [decode(v, arrays, handle, depth + 1) for v in tree]
    if not isinstance(tree, dict) or len(tree) > 2 and "$d" not in tree:
        raise ProtocolError(f"unexpected {type(tree).__name__} in a message")
    if "$a" in tree:
        i = tree["$a"]
        if not isinstance(i, int) or not 0 <= i < len(arrays):
            raise ProtocolError(f"array reference {i!r} out of range")
        return arrays[i]
    if "$t" in tree and isinstance(tree["$t"], list):
        return tuple(decode(v, arrays, handle, depth + 1) for v in tree["$t"])
    if "$d" in tree and isinstance(tree["$d"], dict):
        return {str(k): decode(v, arrays, handle, depth + 1) for k, v in tree["$d"].items()}
    if "$f" in tree and tree["$f"] in ("nan", "inf", "-inf"):
        return float(tree["$f"])
    if "$dtype" in tree and isinstance(tree["$dtype"], str):
        dt = np.dtype(tree["$dtype"])
        if dt.kind not in DTYPE_KINDS:
            raise ProtocolError(f"dtype {dt} is not allowed")
        return dt
    if "$h" in tree and isinstance(tree["$h"], int) and handle is not None:
        return handle(tree["$h"], str(tree.get("type", "object"))[:80])
    raise ProtocolError(f"unexpected object {str(tree)[:80]} in a message")


def _npy(array):
    import numpy as np
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False)
    return buf.getvalue()


def _load_npy(data):
    """One .npy file from bytes: numeric dtype only, its size checked against its header."""
    import numpy as np
    fp = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ProtocolError(f"npy version {version} is not allowed")
    except ProtocolError:
        raise
    except Exception as err:                                  # noqa: BLE001
        raise ProtocolError(f"not an npy array: {type(err).__name__}: {err}") from None
    if dtype.kind not in DTYPE_KINDS or dtype.hasobject:
        raise ProtocolError(f"arrays of dtype {dtype} are not allowed")
    count = 1
    for n in shape:
        if not isinstance(n, int) or n < 0:
            raise ProtocolError(f"bad array shape {shape}")
        count *= n
    if count * dtype.itemsize != len(data) - fp.tell():
        raise ProtocolError(f"an array of shape {shape} and dtype {dtype} holds "
                            f"{len(data) - fp.tell()} bytes")
    fp.seek(0)
    array = np.load(fp, allow_pickle=False)
    return array


def send(fd, value, keep=None, extra=None, write=None):
    """Write one message holding ``value`` (plus top-level fields ``extra``) to ``fd``
    (with ``write(data)`` instead, where given)."""
    tree, arrays = encode(value, keep)
    header = dict(extra or {}, value=tree, arrays=len(arrays))
    blob = json.dumps(header, allow_nan=False).encode()
    parts = [struct.pack(">I", len(blob)), blob]
    for a in arrays:
        data = _npy(a)
        parts += [struct.pack(">Q", len(data)), data]
    (write or (lambda data: _write_all(fd, data)))(b"".join(parts))


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def receive(read, handle=None):
    """Read one message with ``read(n) -> bytes`` (exactly n bytes or raise); return
    (header fields, decoded value). Everything is checked against the limits."""
    (n,) = struct.unpack(">I", read(4))
    if n > MAX_JSON:
        raise ProtocolError(f"a header of {n} bytes (the limit is {MAX_JSON})")
    try:
        header = json.loads(read(n).decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ProtocolError(f"a header that is not JSON: {err}") from None
    if not isinstance(header, dict):
        raise ProtocolError("a header that is not a JSON object")
    count = header.get("arrays", 0)
    if not isinstance(count, int) or not 0 <= count <= MAX_ARRAYS:
        raise ProtocolError(f"{count!r} arrays in one message")
    arrays, total = [], n
    for _ in range(count):
        (size,) = struct.unpack(">Q", read(8))
        total += size
        if size > MAX_ARRAY or total > MAX_TOTAL:
            raise ProtocolError(f"an array of {size} bytes (limits {MAX_ARRAY} per array, "
                                f"{MAX_TOTAL} per message)")
        arrays.append(_load_npy(read(size)))
    try:
        value = decode(header.get("value"), arrays, handle)
    except RecursionError:
        raise ProtocolError("a value nested too deeply") from None
    return header, value


def read_exactly(fd):
    def read(n):
        chunks, left = [], n
        while left:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise EOFError("the other side closed the pipe")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    return read


# ------------------------------------------------------------ stand-ins
def make_standin_class(Module):
    """A small layer with a known forward and backward, built on ``Module``.

    y = tanh(x W + b). Checks put it where another part's layer would stand
    (the ISTA block of a CRATE layer, the layers of a LayerStack), so a part
    is graded without the submission's other parts and without any reference
    code in the runner.
    """
    import numpy as np

    class StandIn(Module):
        def __init__(self, dim, seed=0, dtype="float64"):
            super().__init__(dtype)
            r = np.random.default_rng(seed)
            self.add_param("weight", r.standard_normal((dim, dim)) * (0.5 / math.sqrt(dim)))
            self.add_param("bias", r.standard_normal(dim) * 0.1)

        def forward(self, x, capture=None):
            y = np.tanh(x @ self.param("weight") + self.param("bias"))
            self._cache = (x, y)
            if capture is not None:
                capture.setdefault("standin", []).append(y)
            return y

        def backward(self, dout):
            x, y = self._take_cache()
            dh = dout * (1 - y * y)
            d = x.shape[-1]
            self._accumulate("weight", x.reshape(-1, d).T @ dh.reshape(-1, d))
            self._accumulate("bias", dh.reshape(-1, d).sum(axis=0))
            return dh @ self.param("weight").T

    return StandIn


# ------------------------------------------------------------- the runner
class Runner:
    def __init__(self, out_fd):
        self.out = out_fd
        self.objects = {}
        self.folder = None
        self.allowed = ()

    def keep(self, obj):
        key = len(self.objects) + 1
        self.objects[key] = obj
        return key

    def handle(self, key, _type):
        if key not in self.objects:
            raise ProtocolError(f"no object {key}")
        return self.objects[key]

    def resolve(self, target):
        import importlib
        if not isinstance(target, str) or ":" not in target:
            raise ValueError(f"a target is 'module:name', got {target!r}")
        module, _, qualname = target.partition(":")
        if module != "whitebox" and not module.startswith("whitebox."):
            raise ValueError(f"only the submission's whitebox may be called, not {module}")
        obj = importlib.import_module(module)
        for name in qualname.split("."):
            obj = getattr(obj, name)
        return obj

    def outside(self):
        """Modules imported from outside the submission, the stdlib and the packages."""
        bad = []
        for name, mod in list(sys.modules.items()):
            path = getattr(mod, "__file__", None)
            if not path:
                continue
            real = os.path.realpath(path)
            inside = real.startswith(self.folder + os.sep)
            if self.allowed and real.startswith(self.allowed[0] + os.sep):
                inside = True                     # the runner's own folder (this file)
            parts = real.split(os.sep)
            if name == "whitebox" or name.startswith("whitebox."):
                if not inside:
                    bad.append(f"{name} from {path}")
            elif not inside and any(p.lower().startswith(("whitebox", "__editable__"))
                                    for p in parts):
                bad.append(f"{name} from {path}")          # another whitebox, by any name
            elif not any(real.startswith(a + os.sep) for a in self.allowed):
                bad.append(f"{name} from {path}")
        return bad

    def serve(self, read):
        while True:
            try:
                header, value = receive(read, self.handle)
            except EOFError:
                return
            rid = header.get("id")
            try:
                result = self.dispatch(header.get("op"), value)
                bad = self.outside() if self.folder else []
                if bad:
                    send(self.out, None, extra={"id": rid, "refused":
                         "code was loaded from outside the submission: " + "; ".join(bad[:5])})
                    return
                if isinstance(result, _Kept):
                    send(self.out, None, extra={"id": rid, "kept": self.keep(result.obj),
                                                "type": type(result.obj).__name__[:80]})
                else:
                    send(self.out, result, self.keep, extra={"id": rid})
            except BaseException as err:                      # noqa: BLE001
                send(self.out, None, extra={"id": rid, "error": _describe(err, self.folder)})

    def dispatch(self, op, value):
        if op == "hello":
            self.folder = os.path.realpath(value["folder"])
            self.allowed = tuple(os.path.realpath(p) for p in value["allowed"])
            import whitebox                                        # the submission's
            where = os.path.realpath(whitebox.__file__)
            if not where.startswith(self.folder + os.sep):
                raise ImportError(f"import whitebox found {where}, not the submission")
            return {"whitebox": where}
        if op == "call":
            target, args, kwargs = value[:3]
            result = self.resolve(target)(*args, **kwargs)
            keep = value[3] if len(value) > 3 else ()
            if keep and isinstance(result, tuple):       # these items stay here, as handles
                result = tuple(_Kept(r) if i in keep else r for i, r in enumerate(result))
            return result
        if op == "new":
            target, args, kwargs = value
            return self.keep_object(self.resolve(target)(*args, **kwargs))
        if op == "method":
            obj, name, args, kwargs = value
            return getattr(obj, name)(*args, **kwargs)
        if op == "getattr":
            obj, name = value
            return getattr(obj, name)
        if op == "setattr":
            obj, name, item = value
            setattr(obj, name, item)
            return None
        if op == "keep":
            return self.keep_object(value)
        if op == "get":
            return value
        if op == "standin":
            from whitebox.nn.module import Module
            dim, seed = value
            return self.keep_object(make_standin_class(Module)(dim, seed))
        raise ValueError(f"unknown request {op!r}")

    def keep_object(self, obj):
        return _Kept(obj)


class _Kept:
    """A result that stays in the runner: sent as a handle even if it is data."""

    def __init__(self, obj):
        self.obj = obj


def _describe(err, folder):
    """'ValueError: message', and the deepest line of the submission it came from."""
    import traceback
    where = ""
    for frame in traceback.extract_tb(err.__traceback__):
        if folder and frame.filename.startswith(folder + os.sep):
            where = f" (at {frame.filename[len(folder) + 1:]}:{frame.lineno} in {frame.name})"
    return f"{type(err).__name__}: {str(err)[:1500]}{where}"


def main():
    out = os.dup(1)                 # answers go here; the submission's prints to stderr
    os.dup2(2, 1)
    os.set_inheritable(out, False)
    runner = Runner(out)
    runner.serve(read_exactly(0))


if __name__ == "__main__":
    main()
