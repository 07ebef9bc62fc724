"""setup.py's CUDA build decision on fake build hosts, the arch list, and (slow) real builds in a copy of
the sources: the one-line report, a failing CUDA step that leaves roll._C built, and ROLL_BUILD_CUDA=1."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_setup():
    spec = importlib.util.spec_from_file_location("roll_setup_under_test", REPO / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # __name__ is not "__main__": setup() does not run
    return module


SETUP = _load_setup()
decide = SETUP.decide_cuda_build


@pytest.mark.parametrize(
    ("torch_cuda", "nvcc", "reason"),
    [
        (None, "13.0", "torch 2.11.0 is CPU-only"),
        (None, None, "torch 2.11.0 is CPU-only"),
        ("12.8", None, "nvcc not found (set CUDA_HOME or put nvcc on PATH)"),
        (
            "12.8",
            "13.0",
            "nvcc 13.0 and torch's CUDA 12.8 differ in major version (point CUDA_HOME at a CUDA 12.x toolkit)",
        ),
        ("12.8", "?", "cannot read the version of nvcc ('?')"),
    ],
)
def test_auto_skips_with_the_reason(torch_cuda, nvcc, reason):
    assert decide("2.11.0", torch_cuda, nvcc) == (False, reason, False)


@pytest.mark.parametrize(("torch_cuda", "nvcc"), [("12.8", "12.4"), ("12.8", "12.8"), ("13.0", "13.0")])
def test_auto_builds_when_the_majors_match(torch_cuda, nvcc):
    # A minor mismatch only makes torch warn; a major one makes it refuse to build.
    assert decide("2.11.0", torch_cuda, nvcc, "") == (
        True,
        f"torch 2.11.0 (CUDA {torch_cuda}), nvcc {nvcc}",
        False,
    )


def test_torch_not_importable_points_at_build_isolation():
    build, reason, required = decide(None, None, None)
    assert not build and not required
    assert reason.startswith("torch is not importable at build time")
    assert "--no-build-isolation" in reason


def test_zero_never_builds_even_when_everything_is_there():
    assert decide("2.11.0", "12.8", "12.8", "0") == (False, "ROLL_BUILD_CUDA=0", False)
    assert decide(None, None, None, "0") == (False, "ROLL_BUILD_CUDA=0", False)


def test_one_requires_the_build():
    assert decide("2.11.0", "12.8", "12.4", "1") == (
        True,
        "torch 2.11.0 (CUDA 12.8), nvcc 12.4, ROLL_BUILD_CUDA=1",
        True,
    )
    # Required but impossible: the decision says why and the build (RollBuildExt) fails with it.
    assert decide("2.13.0+cpu", None, "13.0", "1") == (False, "torch 2.13.0+cpu is CPU-only", True)
    assert decide("2.11.0", "12.8", "13.0", "1")[::2] == (False, True)


def test_unknown_flag_value_is_an_error():
    with pytest.raises(ValueError, match=r"ROLL_BUILD_CUDA='yes' is not one of 0 \(never\), 1 \(required\)"):
        decide("2.11.0", "12.8", "12.8", "yes")


def test_arch_list_declared_then_visible_gpus_then_sm90():
    assert SETUP.cuda_arch_list("8.0;9.0+PTX", [(9, 0)]) == ("8.0;9.0+PTX", "TORCH_CUDA_ARCH_LIST")
    assert SETUP.cuda_arch_list(None, [(9, 0), (8, 0), (9, 0)]) == ("8.0;9.0", "visible GPUs")
    assert SETUP.cuda_arch_list("  ", []) == ("9.0", "default, no GPU visible")


def test_report_is_one_line():
    line = SETUP.build_report("built roll._C (C++)", "roll._C_cuda skipped: torch 2.13.0+cpu is CPU-only")
    assert line == "roll: built roll._C (C++); roll._C_cuda skipped: torch 2.13.0+cpu is CPU-only"


# --- real builds (slow: ~15 s of C++ compile), in a copy so the checkout's roll/_C*.so is untouched ---

REPORT = re.compile(r"^roll: .*$", re.MULTILINE)
# Runs setup.py's main() with the decision forced to "build", so the torch CUDA step really runs
# (and, with a CPU torch, really fails inside torch.utils.cpp_extension).
FORCED_BUILD = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("setup_copy", "setup.py")
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
mod.probe_cuda_build = lambda: (mod.CudaDecision(True, "forced by the test", False), ("9.0", "test"))
sys.argv = ["setup.py", "build_ext", "--inplace"]
mod.main()
"""


def _copy_sources(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    shutil.copytree(REPO / "csrc", root / "csrc")
    shutil.copy(REPO / "setup.py", root / "setup.py")
    for package in ("roll", "workers"):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
    return root


def _run(root: Path, args: list[str], **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("ROLL_BUILD_CUDA", "TORCH_CUDA_ARCH_LIST")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=root,
        env={**full_env, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _imports_cpp_extension(root: Path) -> bool:
    code = "import roll._C as c; assert callable(c.gae) and callable(c.balanced_partition)"
    return subprocess.run([sys.executable, "-c", code], cwd=root, timeout=60).returncode == 0


@pytest.mark.slow
def test_build_ext_reports_once_and_survives_a_failing_cuda_step(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.version.cuda is not None:
        pytest.skip("the failing CUDA step is staged with a CPU-only torch")
    root = _copy_sources(tmp_path)

    auto = _run(root, ["setup.py", "build_ext", "--inplace"])
    assert auto.returncode == 0, auto.stderr[-2000:]
    assert REPORT.findall(auto.stdout + auto.stderr) == [
        f"roll: built roll._C (C++); roll._C_cuda skipped: torch {torch.__version__} is CPU-only"
    ]
    assert _imports_cpp_extension(root)

    forced = _run(root, ["-c", FORCED_BUILD])
    assert forced.returncode == 0, forced.stderr[-2000:]
    (line,) = REPORT.findall(forced.stdout + forced.stderr)
    assert line.startswith("roll: built roll._C (C++); roll._C_cuda failed (")
    assert line.endswith("log above; archs 9.0 (test))")
    assert _imports_cpp_extension(root)
    assert not list((root / "roll").glob("_C_cuda*"))

    required = _run(root, ["setup.py", "build_ext", "--inplace"], ROLL_BUILD_CUDA="1")
    assert required.returncode != 0
    assert "error: ROLL_BUILD_CUDA=1 but roll._C_cuda was not built: roll: built roll._C (C++); " in (
        required.stderr
    )
