"""Build and install ROLL (distribution `roll-rl`, packages `roll` and `workers`).

Two compiled extensions, each with Python fallbacks in `roll/ops/` (the package works without them):
- `roll._C` (C++17, pybind11, csrc/*.cpp): always built.
- `roll._C_cuda` (torch CUDA extension, csrc/cuda/): built in a second step after `roll._C`, so no CUDA
  problem can affect the C++ extension. `decide_cuda_build` decides, once, from the torch and nvcc
  found at build time and ROLL_BUILD_CUDA (unset: auto; 0: never; 1: required, else the build fails).
  Archs: TORCH_CUDA_ARCH_LIST if set, else those of the visible GPUs, else 9.0 (sm_90).
The build ends with one line saying what was built and why, e.g.
    roll: built roll._C (C++); roll._C_cuda skipped: torch 2.13.0+cpu is CPU-only

Install for development (see launch/setup_env.sh, which the README commands call):
    pip install -c constraints-cpu.txt --no-build-isolation -e ".[test]"
On a GPU machine (csrc/README.md): install the CUDA torch first, then
    pip install -v --no-build-isolation -e ".[gpu]"
"""

import glob
import os
import re
import shutil
import subprocess
from typing import NamedTuple, Optional

from setuptools import Extension, find_packages, setup
from setuptools.errors import CompileError

try:
    from pybind11.setup_helpers import Pybind11Extension, build_ext
except ImportError:  # pybind11 missing: roll._C is skipped (reported), ops fall back to Python
    Pybind11Extension = None
    from setuptools.command.build_ext import build_ext

CPP_EXT, CUDA_EXT = "roll._C", "roll._C_cuda"
DEFAULT_CUDA_ARCHS = "9.0"  # Hopper (H100/H200), used when the build host shows no GPU
BUILD_CUDA_VALUES = ("0", "1")


class CudaDecision(NamedTuple):
    """Whether to build roll._C_cuda, why, and whether not getting it must fail the build."""

    build: bool
    reason: str
    required: bool


def _major(version: str) -> Optional[int]:
    match = re.match(r"\s*(\d+)", version)
    return int(match.group(1)) if match else None


def decide_cuda_build(
    torch_version: Optional[str],
    torch_cuda: Optional[str],
    nvcc_version: Optional[str],
    flag: Optional[str] = None,
) -> CudaDecision:
    """Whether roll._C_cuda is built, from what the build host has.

    torch_version: None when torch is not importable at build time; torch_cuda: `torch.version.cuda`
    (None for a CPU-only torch); nvcc_version: "12.8" from `nvcc --version`, None when nvcc is not
    found; flag: ROLL_BUILD_CUDA (None or "": auto, "0": never, "1": required).
    """
    flag = (flag or "").strip()
    if flag and flag not in BUILD_CUDA_VALUES:
        raise ValueError(f"ROLL_BUILD_CUDA={flag!r} is not one of 0 (never), 1 (required); unset it for auto")
    required = flag == "1"
    if flag == "0":
        return CudaDecision(False, "ROLL_BUILD_CUDA=0", False)
    if torch_version is None:
        reason = (
            "torch is not importable at build time (pip's isolated build? install the CUDA torch first, "
            "then pip install --no-build-isolation)"
        )
    elif torch_cuda is None:
        reason = f"torch {torch_version} is CPU-only"
    elif nvcc_version is None:
        reason = "nvcc not found (set CUDA_HOME or put nvcc on PATH)"
    elif _major(nvcc_version) is None:
        reason = f"cannot read the version of nvcc ({nvcc_version!r})"
    elif _major(nvcc_version) != _major(torch_cuda):
        reason = (
            f"nvcc {nvcc_version} and torch's CUDA {torch_cuda} differ in major version (point CUDA_HOME "
            f"at a CUDA {_major(torch_cuda)}.x toolkit)"
        )
    else:
        why = f"torch {torch_version} (CUDA {torch_cuda}), nvcc {nvcc_version}"
        return CudaDecision(True, why + (", ROLL_BUILD_CUDA=1" if required else ""), required)
    return CudaDecision(False, reason, required)


def cuda_arch_list(declared: Optional[str], capabilities: list[tuple[int, int]]) -> tuple[str, str]:
    """(TORCH_CUDA_ARCH_LIST to build for, where it came from): the declared list if set, else the
    compute capabilities of the visible GPUs, else DEFAULT_CUDA_ARCHS."""
    if declared and declared.strip():
        return declared.strip(), "TORCH_CUDA_ARCH_LIST"
    if capabilities:
        return ";".join(f"{major}.{minor}" for major, minor in sorted(set(capabilities))), "visible GPUs"
    return DEFAULT_CUDA_ARCHS, "default, no GPU visible"


def _nvcc_version(cuda_home: Optional[str]) -> Optional[str]:
    """Version (e.g. 12.8) of the nvcc torch compiles with ($CUDA_HOME/bin/nvcc, else the one on PATH);
    "?" when its output cannot be read, None when there is none."""
    nvcc = os.path.join(cuda_home, "bin", "nvcc") if cuda_home else None
    if nvcc is None or not os.path.exists(nvcc):
        nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    match = re.search(r"release (\d+\.\d+)", out)
    return match.group(1) if match else "?"


def probe_cuda_build() -> tuple[CudaDecision, Optional[tuple[str, str]]]:
    """The decision for this build host and, when building, the archs and where they came from."""
    flag = os.environ.get("ROLL_BUILD_CUDA")
    if (flag or "").strip() == "0":
        return decide_cuda_build(None, None, None, flag), None
    try:
        import torch
    except Exception:  # any import failure means the same thing here: no torch to build against
        return decide_cuda_build(None, None, None, flag), None
    nvcc = None
    if torch.version.cuda is not None:
        from torch.utils.cpp_extension import CUDA_HOME

        nvcc = _nvcc_version(CUDA_HOME)
    decision = decide_cuda_build(torch.__version__, torch.version.cuda, nvcc, flag)
    if not decision.build:
        return decision, None
    try:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        capabilities = [torch.cuda.get_device_capability(i) for i in range(count)]
    except Exception:  # a broken driver on the build host: build as if no GPU were visible
        capabilities = []
    return decision, cuda_arch_list(os.environ.get("TORCH_CUDA_ARCH_LIST"), capabilities)


def build_report(cpp: str, cuda: str) -> str:
    """The one line printed at the end of the build."""
    return f"roll: {cpp}; {cuda}"


class RollBuildExt(build_ext):
    """Builds roll._C, then roll._C_cuda in a separate torch BuildExtension step whose failures are
    reported (or, with ROLL_BUILD_CUDA=1, raised), and prints the one-line build report."""

    def initialize_options(self):
        super().initialize_options()
        self._cuda_cmd = None

    def run(self):
        if Pybind11Extension is None:
            self.extensions = [e for e in self.extensions if e.name != CPP_EXT]
            cpp = f"{CPP_EXT} skipped: pybind11 is not importable at build time"
        else:
            cpp = f"built {CPP_EXT} (C++)"
        super().run()
        decision, archs = probe_cuda_build()
        sources = sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
        if decision.build and not sources:
            decision = CudaDecision(False, "no sources in csrc/cuda", decision.required)
        if not decision.build or archs is None:
            cuda = f"{CUDA_EXT} skipped: {decision.reason}"
        else:
            arch_note = f"archs {archs[0]} ({archs[1]})"
            try:
                self._build_cuda(sources, archs[0])
                cuda = f"built {CUDA_EXT} (CUDA; {decision.reason}; {arch_note})"
            except Exception as err:  # nvcc/arch/ABI problems: report, keep roll._C and the install
                message = " ".join(str(err).split())[:300]
                cuda = f"{CUDA_EXT} failed ({type(err).__name__}: {message}; log above; {arch_note})"
                decision = decision._replace(build=False)
        line = build_report(cpp, cuda)
        print(line, flush=True)
        if decision.required and not decision.build:
            raise CompileError(f"ROLL_BUILD_CUDA=1 but {CUDA_EXT} was not built: {line}")

    def _build_cuda(self, sources: list[str], archs: str) -> None:
        from torch.utils.cpp_extension import BuildExtension, CUDAExtension

        ext = CUDAExtension(
            CUDA_EXT, sources, extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "--use_fast_math"]}
        )
        cmd = BuildExtension(self.distribution)
        for option in ("inplace", "editable_mode", "build_lib", "build_temp", "force", "debug", "parallel"):
            if hasattr(self, option):
                setattr(cmd, option, getattr(self, option))
        # build_ext takes its extensions from the distribution when finalised.
        saved, self.distribution.ext_modules = self.distribution.ext_modules, [ext]
        try:
            cmd.ensure_finalized()
        finally:
            self.distribution.ext_modules = saved
        previous = os.environ.get("TORCH_CUDA_ARCH_LIST")
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
        try:
            cmd.run()
        finally:
            if previous is None:
                os.environ.pop("TORCH_CUDA_ARCH_LIST")
            else:
                os.environ["TORCH_CUDA_ARCH_LIST"] = previous
        self._cuda_cmd = cmd

    # roll._C_cuda's files join roll._C's in what install/editable_wheel record.
    def get_outputs(self):
        extra = self._cuda_cmd.get_outputs() if self._cuda_cmd is not None else []
        return super().get_outputs() + extra

    def get_output_mapping(self):
        mapping = super().get_output_mapping()
        if self._cuda_cmd is not None:
            mapping.update(self._cuda_cmd.get_output_mapping())
        return mapping


def _cpp_extension() -> Extension:
    sources = sorted(glob.glob("csrc/*.cpp"))
    if Pybind11Extension is None:
        # A placeholder keeps build_ext running (it skips this and reports why).
        return Extension(CPP_EXT, sources)
    return Pybind11Extension(CPP_EXT, sources, include_dirs=["csrc"], cxx_std=17, extra_compile_args=["-O3"])


def main() -> None:
    setup(
        name="roll-rl",
        version="0.1.0",
        description="ROLL: reinforcement-learning post-training of LLMs on Ray, Megatron-Core and SGLang",
        python_requires=">=3.10",
        packages=find_packages(include=["roll", "roll.*", "workers", "workers.*"]),
        package_data={"roll": ["py.typed"]},
        ext_modules=[_cpp_extension()],
        cmdclass={"build_ext": RollBuildExt},
        install_requires=[
            "torch>=2.4",
            "ray[default]>=2.40,<3",
            "megatron-core>=0.16.1,<0.18",
            "triton>=3.1; platform_system == 'Linux'",
            "transformers>=4.51",
            "tokenizers>=0.21",
            "safetensors>=0.4",
            "pybind11>=2.12",
            "omegaconf>=2.3,<3",
            "numpy>=1.26",
            "pyarrow>=15",
            "tensorboard>=2.15",
            "tqdm>=4.66",
        ],
        extras_require={
            "test": [
                "pytest>=8",
                "pytest-xdist>=3.5",
                "hypothesis>=6.100",
                "ruff>=0.6",
                "mypy>=1.10",
                "gymnasium>=1.0",
            ],
            # Agentic RL on gymnasium envs with text observations (roll/envs/gym_adapter.py).
            "gym": ["gymnasium>=1.0"],
            # GPU clusters only: never install these on CPU machines (transformer-engine breaks
            # `import megatron.core` there, and sglang has no CPU engine).
            # sglang versions checked by tests/unit/test_sglang_conformance.py (roll/strategies/sglang_engine.py).
            "sglang": ["sglang>=0.5.6,<=0.5.23"],
            "gpu": [
                "sglang>=0.5.6,<=0.5.23",
                "transformer-engine[pytorch]>=2.0",
            ],
        },
        entry_points={"console_scripts": ["roll=roll.cli:main"]},
        zip_safe=False,
    )


# setuptools' build backend and `python setup.py ...` both run this file as __main__; tests import it.
if __name__ == "__main__":
    main()
