"""Run model-written Python in a separate, locked-down process: `run_python(code) -> SandboxResult`.

Layers, outermost first (`SandboxResult.layers` names the ones a run actually got;
`sandbox_capabilities()` lists what this machine provides):

- `process`, `process_group`: a fresh interpreter (`python -S -s`, no site-packages) in its own
  session; the whole group is SIGKILLed when the run ends or times out (`wall_timeout`).
- `scrubbed_env`: only PATH, LANG, LC_ALL, HOME and TMPDIR (both the work dir), PYTHONHASHSEED=0
  and PYTHONDONTWRITEBYTECODE reach the child; nothing is inherited from the parent.
- `tempdir`: the working directory is a fresh temp dir, deleted afterwards.
- `rlimit_cpu`, `rlimit_as`, `rlimit_fsize`, `rlimit_core`, and `rlimit_nproc` only when it binds
  (Linux exempts uid 0 from RLIMIT_NPROC, and it counts every process and thread of the user).
- `netns`: a new, empty network namespace (no interface is up, not even loopback), where the
  machine allows one (root, or unprivileged user namespaces).
- `no_new_privs`, `no_capabilities`: the child cannot gain privileges and holds none (a root
  parent's capabilities are dropped, so it cannot raise its hard limits or make device nodes).
- `landlock_fs` (kernel >= 5.13): reads only beneath the Python installation, the system library
  dirs, a few files of /etc and /dev, /proc/self, the work dir and `extra_read_paths`; writes only
  beneath the work dir (and /dev/null). `landlock_net` (>= 6.7): no TCP bind/connect.
  `landlock_scope` (>= 6.12): no signals or abstract-socket connections out of the sandbox.
- `audit_hook`: a `sys.addaudithook` hook installed before the user code refuses socket use,
  starting processes (fork, exec, spawn, system, subprocess), ctypes, sub-interpreters, code-object
  construction, changing rlimits, signals to other processes, reading other processes' /proc
  entries, and any file write, removal, rename, chmod... outside the work dir.

The kernel layers are applied by a first interpreter (stage 1, which needs ctypes) that then execs a
clean second interpreter (stage 2) which installs the audit hook and runs the code, so no ctypes
object survives into the user's interpreter. Layers the machine lacks are skipped silently; the
audit hook is always there but is a best-effort layer on its own (pure-Python code cannot remove
it, yet a CPython memory-safety bug could bypass it), so the kernel layers matter.
"""

import contextlib
import functools
import inspect
import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from roll.utils.logging import get_logger

logger = get_logger(__name__)

_SYSTEM_READ_DIRS = ("/usr", "/lib", "/lib32", "/lib64", "/bin")
_SYSTEM_READ_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.preload",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/mime.types",
    "/etc/os-release",
    "/dev/urandom",
    "/dev/random",
    "/dev/zero",
)


@dataclass(kw_only=True)
class SandboxResult:
    """What one sandboxed run produced."""

    stdout: str
    """Standard output, cut to `max_output_chars` (the cut is marked with its size)."""
    stderr: str
    """Standard error (tracebacks, sandbox refusals), cut the same way."""
    exit_code: int | None
    """Exit status of the interpreter; None when a signal killed it (see `killed_by`)."""
    timed_out: bool
    """The wall-clock timeout ran out and the process group was killed."""
    killed_by: str | None
    """Name of the signal that ended the process (SIGKILL on timeout, SIGXCPU on the CPU limit)."""
    duration_s: float
    """Wall-clock seconds from start to exit, interpreter start-up included."""
    layers: list[str]
    """Isolation layers this run actually got (module docstring)."""

    @property
    def ok(self) -> bool:
        """The code ran to completion with exit status 0."""
        return self.exit_code == 0 and not self.timed_out


@dataclass(kw_only=True, frozen=True)
class _Limits:
    timeout_s: float
    cpu_time_s: int
    memory_mb: int
    max_file_mb: int
    max_processes: int
    max_output_chars: int
    extra_read_paths: tuple[str, ...]


def run_python(
    code: str,
    *,
    timeout_s: float = 5.0,
    cpu_time_s: int = 5,
    memory_mb: int = 512,
    max_file_mb: int = 16,
    max_processes: int = 64,
    max_output_chars: int = 4000,
    extra_read_paths: Sequence[str] = (),
) -> SandboxResult:
    """Run `code` as a Python script in the sandbox and return its output; never raises for user code.

    `timeout_s` is wall-clock, `cpu_time_s` CPU seconds (SIGXCPU), `memory_mb` the address-space
    limit, `max_file_mb` the largest file (stdout and stderr included) the code may write,
    `max_processes` RLIMIT_NPROC (module docstring), `extra_read_paths` more paths the code may read.
    """
    limits = _Limits(
        timeout_s=timeout_s,
        cpu_time_s=cpu_time_s,
        memory_mb=memory_mb,
        max_file_mb=max_file_mb,
        max_processes=max_processes,
        max_output_chars=max_output_chars,
        extra_read_paths=tuple(extra_read_paths),
    )
    _check_limits(limits)
    return _run(code, limits, audit_hook=True)


def sandbox_capabilities() -> list[str]:
    """Isolation layers this machine provides, from one probe run (cached for the process)."""
    return list(_probe_layers())


@functools.cache
def _probe_layers() -> tuple[str, ...]:
    layers = _run("pass", _default_limits(), audit_hook=True).layers
    logger.info("python sandbox layers on this machine: %s", ", ".join(layers))
    if "netns" not in layers and "landlock_net" not in layers:
        logger.warning(
            "python sandbox: neither a network namespace nor Landlock network rules are available; "
            "only the audit hook keeps sandboxed code off the network"
        )
    return tuple(layers)


def _default_limits() -> _Limits:
    return _Limits(
        timeout_s=10.0,
        cpu_time_s=5,
        memory_mb=512,
        max_file_mb=16,
        max_processes=64,
        max_output_chars=4000,
        extra_read_paths=(),
    )


def _check_limits(limits: _Limits) -> None:
    rules = (
        ("timeout_s", limits.timeout_s > 0, "> 0"),
        ("cpu_time_s", isinstance(limits.cpu_time_s, int) and limits.cpu_time_s >= 1, "an int >= 1"),
        ("memory_mb", isinstance(limits.memory_mb, int) and limits.memory_mb >= 64, "an int >= 64"),
        ("max_file_mb", isinstance(limits.max_file_mb, int) and limits.max_file_mb >= 1, "an int >= 1"),
        ("max_processes", isinstance(limits.max_processes, int) and limits.max_processes >= 1, "an int >= 1"),
        (
            "max_output_chars",
            isinstance(limits.max_output_chars, int) and limits.max_output_chars >= 0,
            "an int >= 0",
        ),
    )
    for name, ok, rule in rules:
        if not ok:
            raise ValueError(f"run_python: {name}={getattr(limits, name)!r} must be {rule}")


def _run(code: str, limits: _Limits, *, audit_hook: bool) -> SandboxResult:
    # `audit_hook=False` exists so tests can show the kernel layers hold on their own.
    python = _python_executable()
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="roll_sandbox_"))
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": workdir,
        "TMPDIR": workdir,
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    read_dirs, read_files = _read_paths(python)
    report_r, report_w = os.pipe()
    config = {
        "report_fd": report_w,
        "cpu_s": limits.cpu_time_s,
        "as_bytes": limits.memory_mb * 2**20,
        "fsize_bytes": limits.max_file_mb * 2**20,
        "nproc": limits.max_processes,
        "read_dirs": [*read_dirs, *limits.extra_read_paths],
        "read_files": list(read_files),
        "python": python,
        "audit_hook": audit_hook,
    }
    stage_limits, stage_run = _stage_sources()
    try:
        with (
            tempfile.TemporaryFile() as code_file,
            tempfile.TemporaryFile() as out,
            tempfile.TemporaryFile() as err,
        ):
            code_file.write(code.encode("utf-8", errors="replace"))
            code_file.seek(0)
            start = time.monotonic()
            try:
                proc = subprocess.Popen(
                    [python, "-S", "-s", "-c", stage_limits, json.dumps(config), stage_run],
                    stdin=code_file,
                    stdout=out,
                    stderr=err,
                    cwd=workdir,
                    env=env,
                    start_new_session=True,
                    pass_fds=(report_w,),
                )
            finally:
                os.close(report_w)
            exited = _wait_exit(proc.pid, limits.timeout_s)
            # Kill the group before reaping the leader, so its id cannot have been reused.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            returncode = proc.wait()
            duration = time.monotonic() - start
            child_layers = _read_report(report_r)
            stdout = _read_output(out, limits)
            stderr = _read_output(err, limits)
    finally:
        os.close(report_r)
        _remove_tree(workdir)
    layers = ["process", "process_group", "scrubbed_env", "tempdir", "wall_timeout", *child_layers]
    return SandboxResult(
        stdout=stdout,
        stderr=stderr,
        exit_code=returncode if returncode >= 0 else None,
        timed_out=not exited,
        killed_by=_signal_name(-returncode) if returncode < 0 else None,
        duration_s=duration,
        layers=layers,
    )


@functools.cache
def _python_executable() -> str:
    # The base interpreter, not a venv's: the child runs without site-packages, and Landlock then
    # only needs the installation's own prefix readable (no pyvenv.cfg lookup elsewhere).
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


@functools.cache
def _read_paths(python: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    dirs = [sys.base_prefix, sys.base_exec_prefix, os.path.dirname(python), *_SYSTEM_READ_DIRS]
    paths = sysconfig.get_paths()
    dirs += [paths[key] for key in ("stdlib", "platstdlib") if key in paths]
    unique = tuple(dict.fromkeys(os.path.realpath(d) for d in dirs if os.path.isdir(d)))
    return unique, _SYSTEM_READ_FILES


@functools.cache
def _stage_sources() -> tuple[str, str]:
    # Both stages are functions of this module, so ruff and mypy check them; they are shipped to
    # the child as source and must use only their own imports.
    future = "from __future__ import annotations\n"  # annotations name module-level types
    return (
        f"{future}{inspect.getsource(_landlock)}\n{inspect.getsource(_stage_limits)}\n_stage_limits()\n",
        f"{future}{inspect.getsource(_stage_run)}\n_stage_run()\n",
    )


def _wait_exit(pid: int, timeout_s: float) -> bool:
    """Wait until `pid` exits, without reaping it; False on timeout."""
    deadline = time.monotonic() + timeout_s
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            while (remaining := deadline - time.monotonic()) > 0:
                if poller.poll(math.ceil(remaining * 1000)):
                    return True
            return False
        finally:
            os.close(pidfd)
    delay = 0.0005
    while (remaining := deadline - time.monotonic()) > 0:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(min(delay, remaining))
        delay = min(2 * delay, 0.05)
    return False


def _read_report(fd: int) -> list[str]:
    os.set_blocking(fd, False)
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks).decode("ascii", errors="replace").split()


def _read_output(file: IO[bytes], limits: _Limits) -> str:
    file.seek(0)
    text = file.read(limits.max_file_mb * 2**20 + 1).decode("utf-8", errors="replace")
    return _truncate(text, limits.max_output_chars)


def _truncate(text: str, max_chars: int) -> str:
    """`text` cut to about `max_chars` characters: head and tail kept, the cut marked with its size."""
    if len(text) <= max_chars:
        return text
    head = max_chars // 2
    tail = max_chars - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n...[{cut} characters cut]...\n{text[len(text) - tail :] if tail else ''}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _remove_tree(path: str) -> None:
    def make_writable_and_retry(func: Callable[[str], object], failed_path: str, _exc_info: object) -> None:
        # The code may have taken the write bit off its own dirs; give it back and retry once.
        try:
            os.chmod(os.path.dirname(failed_path), 0o700)
            func(failed_path)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable_and_retry)


def _stage_limits() -> None:
    """Stage 1, in the child (shipped with `_landlock`): rlimits, netns, no_new_privs, Landlock, no caps.

    argv: [config JSON, stage-2 source]. Writes the names of the applied layers to the report fd,
    then execs a fresh interpreter on stage 2 (all these layers survive execve).
    """
    import ctypes
    import json
    import os
    import resource
    import sys

    config = json.loads(sys.argv[1])
    stage_run = sys.argv[2]
    layers: list[str] = []

    def set_limit(name: str, which: int, soft: int, hard: int) -> None:
        try:
            _, current_hard = resource.getrlimit(which)
            if current_hard != resource.RLIM_INFINITY:
                soft, hard = min(soft, current_hard), min(hard, current_hard)
            resource.setrlimit(which, (soft, hard))
            layers.append(name)
        except (ValueError, OSError):
            pass

    set_limit("rlimit_core", resource.RLIMIT_CORE, 0, 0)
    # The hard limit one second above the soft one: SIGXCPU first, then the kernel's SIGKILL.
    set_limit("rlimit_cpu", resource.RLIMIT_CPU, config["cpu_s"], config["cpu_s"] + 1)
    set_limit("rlimit_fsize", resource.RLIMIT_FSIZE, config["fsize_bytes"], config["fsize_bytes"])
    before = len(layers)
    set_limit("rlimit_nproc", resource.RLIMIT_NPROC, config["nproc"], config["nproc"])
    if len(layers) > before and os.getuid() == 0:
        layers.pop()  # the kernel exempts uid 0 from RLIMIT_NPROC

    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        libc = None

    if libc is not None:
        clone_newnet, clone_newuser = 0x40000000, 0x10000000
        uid, gid = os.getuid(), os.getgid()
        if os.geteuid() == 0:
            if libc.unshare(clone_newnet) == 0:
                layers.append("netns")
        elif libc.unshare(clone_newuser | clone_newnet) == 0:
            # Map our own ids into the new user namespace so files we create keep their owner.
            try:
                for path, text in (
                    ("setgroups", "deny"),
                    ("uid_map", f"{uid} {uid} 1"),
                    ("gid_map", f"{gid} {gid} 1"),
                ):
                    with open(f"/proc/self/{path}", "w") as file:
                        file.write(text)
                layers.append("netns")
            except OSError:
                pass

        pr_set_no_new_privs = 38
        if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) == 0:
            layers.append("no_new_privs")

        layers += _landlock(libc, config)

        class CapHeader(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class CapData(ctypes.Structure):
            _fields_ = [
                ("effective", ctypes.c_uint32),
                ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32),
            ]

        pr_cap_ambient, pr_cap_ambient_clear_all = 47, 4
        libc.prctl(pr_cap_ambient, pr_cap_ambient_clear_all, 0, 0, 0)
        header = CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
        libc.capset(ctypes.byref(header), (CapData * 2)())
    try:
        with open("/proc/self/status") as status:
            if any(line.split() == ["CapEff:", "0000000000000000"] for line in status):
                layers.append("no_capabilities")
    except OSError:
        pass

    # Last, so that the steps above (ctypes, libffi) are not cramped by it.
    set_limit("rlimit_as", resource.RLIMIT_AS, config["as_bytes"], config["as_bytes"])
    report_fd = config["report_fd"]
    os.write(report_fd, (" ".join(layers) + "\n").encode())
    python = config["python"]
    try:
        os.execv(
            python,
            [python, "-S", "-s", "-c", stage_run, str(report_fd), "1" if config["audit_hook"] else "0"],
        )
    except OSError as err:
        sys.stderr.write(f"sandbox: cannot start the interpreter {python}: {err}\n")
        os._exit(126)


def _landlock(libc: Any, config: dict[str, Any]) -> list[str]:
    """Stage 1: restrict the filesystem, TCP and signals with Landlock; the layer names applied."""
    import ctypes
    import os
    import stat

    abi = libc.syscall(444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, ..._VERSION)
    if abi < 1:
        return []
    read_file, read_dir, write_file, make_char, make_block = 1 << 2, 1 << 3, 1 << 1, 1 << 6, 1 << 11
    refer, truncate, ioctl_dev = 1 << 13, 1 << 14, 1 << 15
    # Every right of ABI 1 but EXECUTE: stage 1 must exec stage 2 (whose hook then refuses exec).
    handled = ((1 << 13) - 1) & ~1
    handled |= (refer if abi >= 2 else 0) | (truncate if abi >= 3 else 0) | (ioctl_dev if abi >= 5 else 0)
    file_rights = handled & (write_file | read_file | truncate | ioctl_dev)

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    bind_tcp, connect_tcp, scope_abstract_unix, scope_signal = 1, 2, 1, 2
    attr = RulesetAttr(
        handled,
        (bind_tcp | connect_tcp) if abi >= 4 else 0,
        (scope_abstract_unix | scope_signal) if abi >= 6 else 0,
    )
    ruleset = libc.syscall(444, ctypes.byref(attr), ctypes.sizeof(attr), 0)
    if ruleset < 0:
        return []

    def allow(path: str, rights: int) -> None:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return
        try:
            is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
            rule = PathBeneath(rights if is_dir else rights & file_rights, fd)
            libc.syscall(445, ruleset, 1, ctypes.byref(rule), 0)  # LANDLOCK_RULE_PATH_BENEATH
        finally:
            os.close(fd)

    try:
        # The work dir: everything but device nodes (a root child could otherwise mknod the disk).
        allow(os.getcwd(), handled & ~(make_char | make_block | ioctl_dev))
        allow("/dev/null", read_file | write_file | truncate)
        allow(os.path.realpath("/proc/self"), read_file | read_dir)
        for path in config["read_dirs"]:
            allow(path, read_file | read_dir)
        for path in config["read_files"]:
            allow(path, read_file)
        if libc.syscall(446, ruleset, 0) != 0:  # landlock_restrict_self
            return []
    finally:
        os.close(ruleset)
    return ["landlock_fs"] + (["landlock_net"] if abi >= 4 else []) + (["landlock_scope"] if abi >= 6 else [])


def _stage_run() -> None:
    """Stage 2, in the child: install the audit hook, then run the user's code (read from stdin).

    argv: [report fd, "1" to install the audit hook]. The user's code can reach the hook (through
    frames), so the hook holds no mutable state, closes over nothing, looks up no global or module
    attribute (all it uses are C builtins bound as defaults), and refuses edits of its attributes.
    Still best-effort: a PathLike whose `__fspath__` changes its answer, or a symlink swapped by a
    thread, can race it; Landlock is the boundary where the kernel has it.
    """
    import builtins
    import io
    import linecache
    import os
    import sys
    import traceback
    import types

    report_fd, with_hook = int(sys.argv[1]), sys.argv[2] == "1"
    code = sys.stdin.read()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.argv = ["<sandbox>"]

    def resolve(
        path: object,
        _type=type,
        _str=str,
        _bytes=bytes,
        _int=int,
        _list=list,
        _reversed=reversed,
        _isinstance=isinstance,
        _fspath=os.fspath,
        _readlink=os.readlink,
        _getcwd=os.getcwd,
        _oserror=OSError,
        _typeerror=TypeError,
    ) -> str | None:
        """`path` made absolute with every symlink resolved (realpath from C builtins only)."""
        if _type(path) is _int:
            try:
                return _readlink(f"/proc/self/fd/{path}")
            except _oserror:
                return None
        try:
            raw = _fspath(path)
        except _typeerror:
            return None
        # Re-encode: a str subclass could override the methods used below.
        if _isinstance(raw, _bytes):
            text = _bytes.decode(raw, "utf-8", "surrogateescape")
        else:
            text = _bytes.decode(_str.encode(raw, "utf-8", "surrogateescape"), "utf-8", "surrogateescape")
        if not text.startswith("/"):
            text = _getcwd() + "/" + text
        todo = _list(_reversed(text.split("/")))
        parts: list[str] = []
        hops = 0
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if parts:
                    parts.pop()
                continue
            candidate = "/" + "/".join([*parts, part])
            try:
                target = _readlink(candidate)
            except _oserror:
                parts.append(part)
                continue
            hops += 1
            if hops > 40:
                return candidate
            if target.startswith("/"):
                parts = []
            todo.extend(_reversed(target.split("/")))
        return "/" + "/".join(parts)

    workdir = resolve(os.getcwd())
    own_pid = os.getpid()
    refused = (
        ("os.fork", "starting processes"),
        ("os.forkpty", "starting processes"),
        ("os.exec", "starting programs"),
        ("os.posix_spawn", "starting processes"),
        ("os.spawn", "starting processes"),
        ("os.system", "starting processes"),
        ("subprocess.Popen", "starting processes"),
        ("os.killpg", "signalling process groups"),
        ("resource.setrlimit", "changing resource limits"),
        ("resource.prlimit", "changing resource limits"),
        ("code.__new__", "building code objects"),
        ("cpython.PyInterpreterState_New", "sub-interpreters"),
    )
    refused_modules = (
        ("ctypes", "ctypes"),
        ("_ctypes", "ctypes"),
        ("_posixsubprocess", "starting processes"),
        ("_xxsubinterpreters", "sub-interpreters"),
        ("_xxinterpchannels", "sub-interpreters"),
    )
    one_path = frozenset(
        (
            "os.remove",
            "os.rmdir",
            "os.mkdir",
            "os.chmod",
            "os.chown",
            "os.utime",
            "os.truncate",
            "os.setxattr",
        )
        + (
            "os.removexattr",
            "os.chflags",
            "os.lchflags",
            "shutil.rmtree",
            "shutil.chown",
            "shutil.make_archive",
        )
    )
    both_paths = frozenset(("os.rename", "os.link", "shutil.move"))
    second_path = frozenset(
        ("os.symlink", "shutil.copyfile", "shutil.copymode", "shutil.copystat", "shutil.copytree")
    )
    # marshal may load code only for the import system, whose loaders are known by code object.
    loader_names = (("_frozen_importlib_external", "_compile_bytecode"), ("zipimport", "_unmarshal_code"))
    loaders = frozenset(
        getattr(getattr(sys.modules.get(m), f, None), "__code__", None) for m, f in loader_names
    )

    def hook(
        event: str,
        args: tuple,
        _workdir=workdir,
        _pid=own_pid,
        _resolve=resolve,
        _write_flags=os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC,
        _refused=refused,
        _refused_modules=refused_modules,
        _one_path=one_path,
        _both_paths=both_paths,
        _second_path=second_path,
        _loaders=loaders,
        _getframe=sys._getframe,
        _type=type,
        _int=int,
        _len=len,
        _function=types.FunctionType,
        _error=PermissionError,
    ) -> None:
        """Refuse what the module docstring lists, with a message naming the event."""
        denied = None
        paths: tuple[object, ...] = ()
        if event == "open":
            path, _, flags = args
            if _type(path) is not _int and _type(flags) is _int and flags & _write_flags:
                paths = (path,)
            else:
                real = _resolve(path) if _type(path) is not _int else None
                fields = real.split("/") if real is not None else []
                if (
                    _len(fields) > 2
                    and fields[1] == "proc"
                    and fields[2].isdigit()
                    and _int(fields[2]) != _pid
                ):
                    denied = ("reading other processes' /proc entries", real)
        elif event in _one_path:
            paths = (args[0],)
        elif event in _both_paths:
            paths = (args[0], args[1])
        elif event in _second_path:
            paths = (args[1],)
        elif event.startswith("socket."):
            denied = ("network access", event)
        elif event.startswith("ctypes."):
            denied = ("ctypes", event)
        elif event == "import":
            for name, what in _refused_modules:
                if args[0] == name or args[0].startswith(name + "."):
                    denied = (what, "import " + args[0])
        elif event == "os.kill" and args[0] not in (0, _pid):
            denied = ("signalling other processes", f"os.kill({args[0]})")
        elif event in ("marshal.loads", "marshal.load") and _getframe(1).f_code not in _loaders:
            denied = ("unmarshalling code", event)
        elif (
            event in ("object.__setattr__", "object.__delattr__")
            and _type(args[0]) is _function
            and (args[0].__code__ is _getframe(0).f_code or args[0] is _resolve)
        ):
            denied = ("changing the sandbox's audit hook", args[1])
        else:
            for name, what in _refused:
                if event == name:
                    denied = (what, event)
        for path in paths:
            real = _resolve(path)
            if (
                real is not None
                and real != "/dev/null"
                and real != _workdir
                and not real.startswith(_workdir + "/")
            ):
                denied = (f"changing files outside the working directory {_workdir}", f"{event} {path!r}")
        if denied is not None:
            raise _error(f"sandbox: {denied[0]} is not allowed ({denied[1]})")

    # An internal invariant: a closure cell could be rebound by the user's code without any event.
    assert hook.__closure__ is None and resolve.__closure__ is None, "the audit hook must close over nothing"
    if with_hook:
        sys.addaudithook(hook)
        os.write(report_fd, b"audit_hook\n")
    os.close(report_fd)
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)  # output printed before a kill is kept

    filename = "<sandbox>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        compiled = compile(code, filename, "exec")
    except (SyntaxError, ValueError) as err:
        traceback.print_exception(err.with_traceback(None))
        sys.exit(1)
    try:
        exec(compiled, {"__name__": "__main__", "__builtins__": builtins})
    except SystemExit:
        raise
    except BaseException as err:  # any failure of the user's code is reported as Python would
        # Show only the user's frames: not this function's, nor the audit hook's (both "<string>").
        try:
            report = traceback.TracebackException.from_exception(err)
            report.stack = traceback.StackSummary.from_list(
                [f for f in report.stack if f.filename != "<string>"]
            )
            sys.stderr.write("".join(report.format()))
        except Exception:  # e.g. an exception whose formatting itself fails: Python's own printer
            sys.excepthook(type(err), err, err.__traceback__)
        sys.exit(1)
