"""The python sandbox (roll/envs/sandbox.py): each limit shown to hold for real on this machine.

Network (a socket listening in this process is never reached), memory (4 GiB), processes (fork
refused; children that do get started are killed with the group), files outside the work dir,
wall-clock and CPU time, output size, environment secrets, signals to this process; ordinary
stdlib code still runs. Kernel layers (netns, Landlock) are also checked with the audit hook off
(`_run(..., audit_hook=False)`) where this machine has them, so each layer is shown on its own.

Fork tests are bounded by construction (a fixed number of forks from the first process only), so
even a sandbox that failed would start a handful of sleeping processes, not a fork bomb; the
unbounded `while True: os.fork()` runs only after the bounded one showed fork is refused.
"""

import dataclasses
import json
import os
import socket
import time
from collections.abc import Iterator

import pytest

from roll.envs.sandbox import SandboxResult, _default_limits, _run, run_python, sandbox_capabilities

CAPS = sandbox_capabilities()
KERNEL_ONLY = dataclasses.replace(_default_limits(), timeout_s=5.0)
ALLOWED_ENV = {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE"}


def _kernel_only(code: str) -> SandboxResult:
    """Run with every layer but the audit hook."""
    return _run(code, KERNEL_ONLY, audit_hook=False)


def _live_processes() -> Iterator[tuple[int, int, int]]:
    """(pid, ppid, pgid) of every process that is not a zombie (a killed child stays one until reaped)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X"):
            yield int(entry), int(fields[1]), int(fields[2])


def _live_members(pgid: int, wait_s: float = 2.0) -> list[int]:
    """Live members of group `pgid`, after waiting up to `wait_s` for a SIGKILL already sent to land."""
    deadline = time.monotonic() + wait_s
    while (
        members := [pid for pid, _, group in _live_processes() if group == pgid]
    ) and time.monotonic() < deadline:
        time.sleep(0.02)
    return members


def _live_children() -> int:
    return sum(1 for _, ppid, _ in _live_processes() if ppid == os.getpid())


def _same_children(before: int) -> bool:
    deadline = time.monotonic() + 2.0
    while _live_children() != before and time.monotonic() < deadline:
        time.sleep(0.02)
    return _live_children() == before


def test_capabilities_name_the_layers():
    assert sandbox_capabilities() == CAPS
    for layer in ("process", "process_group", "scrubbed_env", "tempdir", "wall_timeout", "audit_hook"):
        assert layer in CAPS
    for layer in ("rlimit_cpu", "rlimit_as", "rlimit_fsize", "rlimit_core"):
        assert layer in CAPS
    # RLIMIT_NPROC does not bind uid 0; it must not be claimed there.
    assert ("rlimit_nproc" in CAPS) == (os.getuid() != 0)


def test_plain_code_and_stdlib_run():
    result = run_python("print(sum(range(10)))")
    assert result.ok and result.stdout == "45\n" and result.stderr == ""
    assert result.exit_code == 0 and result.killed_by is None and not result.timed_out
    assert result.layers == CAPS
    code = (
        "import json, fractions, statistics, inspect, dataclasses, collections\n"
        "print(json.dumps({'mean': statistics.mean([1, 2, 3])}))\n"
        "print(fractions.Fraction(3, 6))\n"
        "print(len(inspect.getsource(json)) > 100)\n"  # reads a stdlib source file
    )
    result = run_python(code)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == ['{"mean": 2}', "1/2", "True"]


def test_hash_seed_is_fixed():
    first, second = run_python("print(hash('roll'))"), run_python("print(hash('roll'))")
    assert first.ok and first.stdout == second.stdout


def test_working_dir_is_private_and_removed():
    code = (
        "import os, tempfile\n"
        "with open('notes.txt', 'w') as f: f.write('hi')\n"
        "os.mkdir('d'); os.rename('notes.txt', 'd/n.txt')\n"
        "fd, path = tempfile.mkstemp(); os.close(fd)\n"
        "print(os.getcwd()); print(open('d/n.txt').read()); print(os.path.dirname(path) == os.getcwd())\n"
    )
    result = run_python(code)
    assert result.ok, result.stderr
    workdir, text, tmp_inside = result.stdout.split()
    assert text == "hi" and tmp_inside == "True"
    assert not os.path.exists(workdir)


def test_environment_holds_no_parent_secret(monkeypatch):
    monkeypatch.setenv("ROLL_TEST_SECRET", "s3cr3t-value")
    result = run_python("import os, json; print(json.dumps(dict(os.environ)))")
    assert result.ok, result.stderr
    assert "s3cr3t-value" not in result.stdout
    assert set(json.loads(result.stdout)) <= ALLOWED_ENV
    # Nor through /proc: this process's environ is out of reach.
    steal = f"print(open('/proc/{os.getpid()}/environ', 'rb').read().count(b's3cr3t-value'))"
    for result in (run_python(steal), *([_kernel_only(steal)] if "landlock_fs" in CAPS else [])):
        assert not result.ok and "s3cr3t" not in result.stdout
        assert "PermissionError" in result.stderr


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def _raw_connect(port: int) -> str:
    return (
        "import socket\n"
        "s = socket.socket()\n"
        "s.settimeout(2)\n"
        f"s.connect(('127.0.0.1', {port}))\n"
        "print('connected')\n"
    )


def _assert_no_connection(server: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        server.accept()


def test_network_refused(listener):
    port = listener.getsockname()[1]
    code = (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "s.sendall(b'hello'); print('connected')\n"
    )
    result = run_python(code)
    assert result.exit_code == 1 and "connected" not in result.stdout
    assert "sandbox: network access is not allowed" in result.stderr
    _assert_no_connection(listener)
    assert "sandbox: network access" in run_python(_raw_connect(port)).stderr
    _assert_no_connection(listener)


@pytest.mark.skipif(
    "netns" not in CAPS and "landlock_net" not in CAPS, reason="no kernel network isolation here"
)
def test_network_refused_by_the_kernel_alone(listener):
    port = listener.getsockname()[1]
    result = _kernel_only(_raw_connect(port))
    assert result.exit_code == 1 and "connected" not in result.stdout
    assert (
        "Error" in result.stderr and "sandbox:" not in result.stderr
    )  # the kernel's refusal, not the hook's
    _assert_no_connection(listener)
    if "netns" in CAPS:
        # A fresh namespace: only a loopback interface, and it is down, so UDP goes nowhere either.
        result = _kernel_only("import socket; print(sorted(name for _, name in socket.if_nameindex()))")
        assert result.stdout.strip() == "['lo']", result.stderr
        udp = (
            "import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.sendto(b'x', ('127.0.0.1', {port}))\n"
        )
        assert "Network is unreachable" in _kernel_only(udp).stderr


def test_allocating_4gib_fails():
    result = run_python("x = bytearray(4 * 1024**3)\nprint('allocated')", memory_mb=512)
    assert "allocated" not in result.stdout
    assert result.exit_code != 0
    assert "MemoryError" in result.stderr or result.killed_by is not None


BOUNDED_FORKS = (
    "import os, time\n"
    "print(os.getpid(), flush=True)\n"
    "started = 0\n"
    "for _ in range(5):\n"
    "    try:\n"
    "        pid = os.fork()\n"
    "    except BlockingIOError:\n"  # RLIMIT_NPROC, where it binds
    "        break\n"
    "    if pid == 0:\n"
    "        time.sleep(30)\n"
    "        os._exit(0)\n"
    "    started += 1\n"
    "print('started', started)\n"
)


def test_fork_refused_and_a_fork_bomb_contained():
    children_before = _live_children()
    result = run_python(BOUNDED_FORKS)
    assert "started" not in result.stdout
    assert "sandbox: starting processes is not allowed (os.fork)" in result.stderr
    assert _live_members(int(result.stdout.split()[0])) == []

    # The bounded run showed fork is refused, so the real bombs below cannot multiply.
    for code in (
        "import os\nwhile True: os.fork()",
        "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass",
    ):
        start = time.monotonic()
        result = run_python(code, timeout_s=2.0)
        assert time.monotonic() - start < 4.0
        assert "sandbox: starting processes" in result.stderr or result.timed_out
    assert _same_children(children_before)


def test_group_kill_takes_stray_children_down():
    # Without the hook (and as root, where RLIMIT_NPROC does not bind) the five forks succeed; the
    # group kill at the end of the run must take the sleeping children down with their parent.
    children_before = _live_children()
    result = _kernel_only(BOUNDED_FORKS)
    assert result.exit_code == 0, result.stderr
    assert _live_members(int(result.stdout.split()[0])) == []
    assert _same_children(children_before)


@pytest.mark.skipif(os.getuid() == 0, reason="RLIMIT_NPROC does not bind uid 0")
def test_nproc_limit_binds_without_the_hook():
    code = (
        "import os, time\n"
        "try:\n"
        "    for _ in range(20):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30); os._exit(0)\n"
        "except OSError as e:\n"
        "    print('refused', e.errno)\n"
    )
    result = _run(code, dataclasses.replace(KERNEL_ONLY, max_processes=1), audit_hook=False)
    assert "refused 11" in result.stdout


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("import subprocess", "starting processes"),
        ("import os; os.system('true')", "starting processes"),
        ("import os; os.execv('/bin/true', ['true'])", "starting programs"),
        ("import os; os.posix_spawn('/bin/true', ['true'], {})", "starting processes"),
        ("import ctypes", "ctypes"),
        ("import marshal; marshal.loads(marshal.dumps(compile('1', 'x', 'eval')))", "unmarshalling code"),
        ("(lambda: 1).__code__.replace(co_consts=(2,))", "building code objects"),
        ("import resource; resource.setrlimit(resource.RLIMIT_AS, (-1, -1))", "changing resource limits"),
        ("import sys; h = sys._getframe(1).f_locals['hook']; h.__defaults__ = None", "changing the sandbox"),
        (
            "import sys; h = sys._getframe(1).f_locals['hook']; h.__code__ = (lambda *a: 0).__code__",
            "changing the",
        ),
    ],
)
def test_refusals(code, message):
    result = run_python(code)
    assert result.exit_code == 1
    assert f"sandbox: {message}" in result.stderr, result.stderr


def test_signals_to_other_processes_refused():
    code = "import os\nos.kill(os.getppid(), 0)\nprint('signalled')"  # signal 0: a probe, harmless
    assert "sandbox: signalling other processes" in run_python(code).stderr
    if "landlock_scope" in CAPS:
        result = _kernel_only(code)
        assert "signalled" not in result.stdout and "Operation not permitted" in result.stderr


@pytest.mark.parametrize(
    "template",
    [
        "open({target!r}, 'w').write('x')",
        "import os; os.close(os.open({target!r}, os.O_WRONLY | os.O_CREAT))",
        "import pathlib; pathlib.Path({target!r}).write_text('x')",
        "import os; os.symlink({parent!r}, 'link'); open('link/escape.txt', 'w').write('x')",
        "import os; open('mine.txt', 'w').write('x'); os.rename('mine.txt', {target!r})",
        "import shutil; open('mine.txt', 'w').write('x'); shutil.copyfile('mine.txt', {target!r})",
    ],
)
def test_writes_outside_the_workdir_fail(tmp_path, template):
    target = tmp_path / "escape.txt"
    code = template.format(target=str(target), parent=str(tmp_path))
    result = run_python(code)
    assert result.exit_code == 1 and "PermissionError" in result.stderr, result.stderr
    assert not target.exists()
    if "landlock_fs" in CAPS:
        result = _kernel_only(code)
        assert result.exit_code == 1 and "PermissionError" in result.stderr, result.stderr
        assert not target.exists()


def test_removing_or_changing_files_outside_fails(tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("keep")
    victim.chmod(0o644)
    for code in (f"import os; os.remove({str(victim)!r})", f"import os; os.chmod({str(victim)!r}, 0o777)"):
        assert "sandbox: changing files outside the working directory" in run_python(code).stderr
    assert victim.read_text() == "keep" and victim.stat().st_mode & 0o777 == 0o644


@pytest.mark.skipif("landlock_fs" not in CAPS, reason="no Landlock here")
def test_reads_outside_the_allowed_paths_fail(tmp_path):
    secret = tmp_path / "answers.txt"
    secret.write_text("42")
    result = run_python(f"print(open({str(secret)!r}).read())")
    assert "42" not in result.stdout and "Permission denied" in result.stderr
    assert (
        run_python(f"print(open({str(secret)!r}).read())", extra_read_paths=[str(tmp_path)]).stdout == "42\n"
    )


def test_infinite_loop_is_killed_at_the_timeout():
    result = run_python("while True: pass", timeout_s=1.0)
    assert result.timed_out and result.killed_by == "SIGKILL" and result.exit_code is None
    assert 1.0 <= result.duration_s < 2 * 1.0 + 0.5


def test_output_printed_before_a_timeout_is_kept():
    result = run_python("print('progress')\nwhile True: pass", timeout_s=1.0)
    assert result.timed_out and result.stdout == "progress\n"


def test_cpu_limit_kills_with_sigxcpu():
    result = run_python("while True: pass", timeout_s=10.0, cpu_time_s=1)
    assert not result.timed_out and result.killed_by == "SIGXCPU"
    assert result.duration_s < 4.0


def test_output_is_truncated_with_the_cut_size():
    result = run_python("print('x' * 10000)", max_output_chars=100)
    assert result.ok
    assert "[9901 characters cut]" in result.stdout  # 10001 characters printed, 100 kept
    assert len(result.stdout) < 200


def test_file_size_limit():
    result = run_python("open('big', 'wb').write(b'x' * (2 * 1024**2))", max_file_mb=1)
    assert result.exit_code == 1 and "File too large" in result.stderr


def test_errors_are_reported_like_python():
    result = run_python("def f(x):\n    return 1 / x\nf(0)\n")
    assert result.exit_code == 1
    assert 'File "<sandbox>", line 2, in f' in result.stderr and "ZeroDivisionError" in result.stderr
    assert "<string>" not in result.stderr  # the sandbox's own frames are hidden
    assert "SyntaxError" in run_python("def f(:").stderr
    assert run_python("import sys; sys.exit(3)").exit_code == 3


@pytest.mark.parametrize(
    ("field", "value"), [("timeout_s", 0), ("cpu_time_s", 0), ("memory_mb", 16), ("max_file_mb", 0)]
)
def test_invalid_limits_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        run_python("pass", **{field: value})
