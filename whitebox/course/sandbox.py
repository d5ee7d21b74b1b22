"""The runner's process, seen from the grader: start it isolated and limited, talk to it, end it.

``Sandbox(folder, view, allowed, timeout)`` copies the submission's
``whitebox/`` and runner.py into a private temporary folder and starts
``python -I -S`` there with an explicit ``sys.path`` (the copy, then ``view``:
links to the installed packages without any whitebox), its own session,
resource limits (CPU time, address space, file size, processes) and, when the
grader is root, as an unprivileged user. ``request`` sends one request and
reads one answer; the submission has ``timeout`` seconds of wall-clock time for
all its answers in the part (the judge's own work does not count); ``close`` kills the
process group and any process left behind (an orphan of the grader, which the
grader makes a child subreaper, or one carrying the runner's token in its
environment). ``Run`` and ``Remote`` are what the checks hold.
"""
import ctypes
import functools
import os
import pathlib
import pwd
import secrets
import select
import shutil
import signal
import site
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time

from . import runner as codec

RUNNER = pathlib.Path(codec.__file__).resolve()
# no whitebox install; no Numba (grading runs the NumPy ops, WHITEBOX_FUSED=0, and a
# compiler in the runner only costs start-up time)
SKIP_IN_VIEW = ("whitebox", "__editable__", "_whitebox", "numba", "llvmlite")
LIMITS = {"cpu_s": 300, "memory": 4 << 30, "file_size": 64 << 20}


class CheckFailed(AssertionError):
    """A check found the submission wrong; the message says what and where."""


class StudentError(Exception):
    """The submission raised; ``kind`` is the exception's type name."""

    def __init__(self, message):
        super().__init__(message)
        self.kind = message.split(":", 1)[0]


class RunnerGone(Exception):
    """The runner died, timed out, broke the protocol or was refused; no more checks run."""


# ------------------------------------------------------------ the sandbox
def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _prctl(option, value):
    libc = _libc()
    if libc is not None and hasattr(libc, "prctl"):
        return libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0)
    return -1


PR_SET_DUMPABLE, PR_GET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 4, 3, 36, 37


def site_dirs():
    """Folders that hold the installed third-party packages (NumPy's among them)."""
    dirs = [p for p in site.getsitepackages() if os.path.isdir(p)]
    user = site.getusersitepackages()
    if isinstance(user, str) and os.path.isdir(user):
        dirs.append(user)
    import numpy
    home = str(pathlib.Path(numpy.__file__).resolve().parents[1])
    if home not in [str(pathlib.Path(d).resolve()) for d in dirs]:
        dirs.append(home)
    return dirs


def make_view(where):
    """A folder of links to every installed package but whitebox (no editable finder,
    no .pth file, no whitebox metadata): the runner's third-party sys.path entry."""
    view = pathlib.Path(where) / "site"
    view.mkdir()
    seen = set()
    for d in site_dirs():
        for entry in sorted(os.listdir(d)):
            low = entry.lower()
            if (entry in seen or low.endswith((".pth", ".egg-link"))
                    or any(low.startswith(s) for s in SKIP_IN_VIEW)):
                continue
            seen.add(entry)
            (view / entry).symlink_to(os.path.join(d, entry))
    return view, [str(pathlib.Path(d).resolve()) for d in site_dirs()]


def stdlib_dirs():
    paths = sysconfig.get_paths()
    out = {os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib") if k in paths}
    out.add(os.path.realpath(os.path.join(sys.base_prefix, "lib")))
    return sorted(out)


@functools.lru_cache(maxsize=None)
def unprivileged_user():
    """(uid, gid, note): the user the runner drops to when the grader is root, or
    (None, None, why not)."""
    if os.geteuid() != 0:
        return None, None, ""
    try:
        user = pwd.getpwnam(os.environ.get("WHITEBOX_GRADE_USER", "nobody"))
    except KeyError:
        return None, None, "the runner ran as root: there is no user 'nobody' to drop to"
    uid, gid = user.pw_uid, user.pw_gid

    def drop():
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    probe = f"import sys; sys.path[:0] = {site_dirs()!r}; import numpy"
    try:
        code = subprocess.run([sys.executable, "-I", "-S", "-c", probe], preexec_fn=drop,
                              capture_output=True, timeout=60, cwd="/").returncode
    except (OSError, subprocess.SubprocessError):
        code = -1
    if code:
        return None, None, (f"the runner ran as root: user {user.pw_name} cannot run "
                            f"{sys.executable} with NumPy (install Python and the packages "
                            "where it can read them; see tutorials/INSTRUCTORS.md)")
    return uid, gid, ""


def _preexec(uid, gid, cpu_s, memory, file_size):
    def setup():
        import resource
        if uid is not None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        # no new processes (root ignores this limit; the group kill and the reaper remain)
        for name, value in (("RLIMIT_CPU", cpu_s), ("RLIMIT_AS", memory),
                            ("RLIMIT_FSIZE", file_size), ("RLIMIT_CORE", 0),
                            ("RLIMIT_NPROC", 0)):
            if hasattr(resource, name):
                try:
                    resource.setrlimit(getattr(resource, name), (value, value))
                except (ValueError, OSError):
                    if name in ("RLIMIT_CPU", "RLIMIT_FSIZE"):
                        raise         # these two every Unix has; the others vary (macOS)
    return setup


def _children_of(pid):
    out = []
    for entry in (os.listdir("/proc") if os.path.isdir("/proc") else ()):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(entry))
    return out


def _with_token(token):
    out = []
    needle = f"WHITEBOX_RUNNER_TOKEN={token}".encode()
    for entry in (os.listdir("/proc") if os.path.isdir("/proc") else ()):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        out.append(int(entry))
            except OSError:
                continue
    return out


class Sandbox:
    """One runner process for one part; ``close()`` leaves nothing of it behind."""

    def __init__(self, folder, view, allowed, timeout, limits=None):
        self.deadline = time.monotonic() + timeout       # until the first request
        self.used = 0.0                                     # seconds spent waiting on answers
        self.timeout = timeout
        self.token = secrets.token_hex(16)
        self.uid, self.gid, self.note = unprivileged_user()
        limits = dict(LIMITS, **(limits or {}))
        self.work = pathlib.Path(tempfile.mkdtemp(prefix="whitebox-run-"))
        copy = self.work / "submission"
        shutil.copytree(pathlib.Path(folder) / "whitebox", copy / "whitebox", symlinks=False,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copy2(RUNNER, self.work / "runner.py")
        (self.work / "home").mkdir()
        if self.uid is not None:
            for path in [self.work, *self.work.rglob("*")]:
                os.chown(path, self.uid, self.gid, follow_symlinks=False)
        self.folder = str(copy.resolve())
        self.stderr = tempfile.TemporaryFile()
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.work / "home"), "LANG": "C.UTF-8",
               "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(self.work / "home"),
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "NUMBA_NUM_THREADS": "1", "WHITEBOX_FUSED": "0",
               "WHITEBOX_RUNNER_TOKEN": self.token}
        path = [self.folder, str(view)]
        bootstrap = ("import sys; sys.path.insert(0, %r); sys.path.append(%r);"
                     " sys.argv = ['runner']; import runpy; runpy.run_path(%r, run_name="
                     "'__main__')" % (path[0], path[1], str(self.work / "runner.py")))
        cpu = max(1, int(min(limits["cpu_s"], timeout + 1)))
        self.before = set(_children_of(os.getpid()))
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", bootstrap], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.stderr, cwd=str(self.work), env=env,
            start_new_session=True, close_fds=True,
            preexec_fn=_preexec(self.uid, self.gid, cpu, limits["memory"],
                                limits["file_size"]))
        self.ids = 0
        self.closed = False
        self.allowed = [str(self.work.resolve()), *stdlib_dirs(), *allowed]

    # -------------------------------------------------------------- requests
    def _write(self, data):
        """Write a request without blocking past the deadline (a runner that stops
        reading cannot hold the grader)."""
        fd = self.proc.stdin.fileno()
        os.set_blocking(fd, False)
        view = memoryview(data)
        while view:
            wait = self.deadline - time.monotonic()
            if wait <= 0:
                raise RunnerGone(f"the submission did not read its input within the part's "
                                 f"{self.timeout:g} s")
            _, ready, _ = select.select([], [fd], [], min(wait, 1.0))
            if ready:
                try:
                    view = view[os.write(fd, view):]
                except BlockingIOError:
                    continue

    def _read(self, n):
        chunks, left = [], n
        fd = self.proc.stdout.fileno()
        while left:
            wait = self.deadline - time.monotonic()
            if wait <= 0:
                raise RunnerGone(f"the submission did not answer within the part's "
                                 f"{self.timeout:g} s")
            ready, _, _ = select.select([fd], [], [], min(wait, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise RunnerGone(self._why_gone())
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _why_gone(self):
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "the submission's process closed its answers and kept running"
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ \
                else str(-code)
            why = {"SIGXCPU": " (out of CPU time)", "SIGKILL": " (killed)",
                   "SIGXFSZ": " (wrote too large a file)"}.get(name, "")
            return f"the submission's process ended by {name}{why}"
        return f"the submission's process exited with code {code} before answering" + \
            self._stderr_tail()

    def _stderr_tail(self):
        """The last lines the runner wrote to stderr (the submission's prints among them)."""
        try:
            self.stderr.seek(0, os.SEEK_END)
            size = self.stderr.tell()
            self.stderr.seek(max(0, size - 400))
            tail = self.stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return f"; its last output: {' '.join(tail.split())[-300:]}" if tail else ""

    def request(self, op, value):
        if self.closed:
            raise RunnerGone("the submission's process has already ended")
        self.ids += 1
        start = time.monotonic()
        self.deadline = start + max(0.0, self.timeout - self.used)
        try:
            return self._exchange(op, value)
        finally:
            self.used += time.monotonic() - start

    def _exchange(self, op, value):
        try:
            codec.send(self.proc.stdin.fileno(), value, self._handle_id,
                       extra={"op": op, "id": self.ids}, write=self._write)
        except (BrokenPipeError, OSError):
            raise RunnerGone(self._why_gone()) from None
        try:
            header, result = codec.receive(self._read, self._proxy)
        except (codec.ProtocolError, struct.error, ValueError) as err:
            raise RunnerGone(f"the submission's process sent a malformed answer ({err})") \
                from None
        if header.get("id") != self.ids:
            raise RunnerGone("the submission's process answered out of turn")
        if "refused" in header:
            raise RunnerGone(f"refused: {str(header['refused'])[:600]}")
        if "error" in header:
            raise StudentError(str(header["error"])[:2000])
        if "kept" in header:
            return Remote(self, header["kept"], str(header.get("type", "object"))[:80])
        return result

    def _handle_id(self, obj):
        if isinstance(obj, Remote) and obj._sandbox is self:
            return obj._id
        raise codec.ProtocolError(f"a {type(obj).__name__} cannot be sent to the runner")

    def _proxy(self, key, type_name):
        return Remote(self, key, type_name)

    def hello(self):
        return self.request("hello", {"folder": self.folder, "allowed": self.allowed})

    # ----------------------------------------------------------------- close
    def close(self):
        """Kill the runner's process group and everything it started; remove the copy."""
        if self.closed:
            return
        self.closed = True
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for _ in range(20):                  # orphans (made ours by the subreaper) and tokens
            strays = ([p for p in _children_of(os.getpid()) if p not in self.before]
                      + _with_token(self.token))
            strays = [p for p in set(strays) if p != os.getpid()]
            if not strays:
                break
            for pid in strays:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.05)
            for pid in strays:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
        self.stderr.close()
        shutil.rmtree(self.work, ignore_errors=True)


class Remote:
    """An object that lives in the runner: method calls and attributes go there."""

    def __init__(self, sandbox, key, type_name):
        object.__setattr__(self, "_sandbox", sandbox)
        object.__setattr__(self, "_id", key)
        object.__setattr__(self, "_type", type_name)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return functools.partial(self._method, name)

    def _method(self, name, *args, **kwargs):
        return self._sandbox.request("method", (self, name, list(args), kwargs))

    def attr(self, name):
        """The attribute's value (data) or a Remote for an object."""
        return self._sandbox.request("getattr", (self, name))

    def set(self, name, value):
        return self._sandbox.request("setattr", (self, name, value))

    def __repr__(self):
        return f"<{self._type} in the submission>"


class Run:
    """What a check receives: calls into the submission, nothing else."""

    def __init__(self, sandbox):
        self._sandbox = sandbox

    def call(self, target, *args, **kwargs):
        """The submission's ``module:function`` called with these arguments; its result."""
        return self._sandbox.request("call", (target, list(args), kwargs))

    def forward(self, target, *args, **kwargs):
        """The submission's ``(out, cache)`` pair: out comes back, the cache stays in the
        runner (a Remote to hand to its backward)."""
        return self._sandbox.request("call", (target, list(args), kwargs, [1]))

    def new(self, target, *args, **kwargs):
        """An object of the submission's ``module:Class``, kept in the runner."""
        return self._sandbox.request("new", (target, list(args), kwargs))

    def keep(self, value):
        """``value`` (data: a dict of lists, say) sent once and kept in the runner."""
        return self._sandbox.request("keep", value)

    def get(self, remote):
        """The current value of an object kept in the runner, as data."""
        return self._sandbox.request("get", remote)

    def standin(self, dim, seed=0):
        """A stand-in layer y = tanh(x W + b) (runner.make_standin_class) in the runner."""
        return self._sandbox.request("standin", (dim, seed))
