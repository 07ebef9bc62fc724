"""Build and install ROLL (distribution `roll-rl`, packages `roll` and `workers`).

The C++ extension `roll._C` (pybind11, csrc/*.cpp) is always built. The CUDA extension
`roll._C_cuda` (csrc/cuda/*.cu) is built only when a CUDA torch and nvcc are present; on CPU
machines it is skipped and never fails the build. Every compiled op has a Python fallback in
`roll/ops/`, so the package also works when no extension could be built.

Install for development (see launch/setup_env.sh, which the README commands call):
    pip install -c constraints-cpu.txt --no-build-isolation -e ".[test]"
"""

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

try:
    from pybind11.setup_helpers import Pybind11Extension, build_ext
except ImportError:  # pybind11 missing: install metadata only, ops fall back to Python
    Pybind11Extension = None
    from setuptools.command.build_ext import build_ext


def _cpu_extensions():
    if Pybind11Extension is None:
        return []
    sources = sorted(glob.glob("csrc/*.cpp"))
    if not sources:
        return []
    return [
        Pybind11Extension(
            "roll._C",
            sources,
            include_dirs=["csrc"],
            cxx_std=17,
            extra_compile_args=["-O3"],
        )
    ]


def _cuda_extensions():
    """CUDA ops, only with a CUDA build of torch and nvcc on PATH."""
    cu_sources = sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
    if not cu_sources or os.environ.get("ROLL_SKIP_CUDA") == "1":
        return [], None
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CUDAExtension
    except ImportError:
        return [], None
    if torch.version.cuda is None or shutil.which("nvcc") is None:
        return [], None
    ext = CUDAExtension(
        "roll._C_cuda",
        cu_sources,
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "--use_fast_math"]},
    )
    return [ext], BuildExtension


def _tolerant(build_cls):
    """A build_ext that reports, instead of failing on, a CUDA extension that does not compile:
    the Python/C++ fallbacks keep the package usable."""

    class TolerantBuildExt(build_cls):
        def build_extension(self, ext):
            if ext.name != "roll._C_cuda":
                return super().build_extension(ext)
            try:
                return super().build_extension(ext)
            except Exception as err:  # nvcc/arch mismatch: keep the install going
                sys.stderr.write(f"WARNING: roll._C_cuda was not built ({err}); CUDA ops fall back\n")

    return TolerantBuildExt


cuda_exts, cuda_build_ext = _cuda_extensions()

setup(
    name="roll-rl",
    version="0.1.0",
    description="ROLL: reinforcement-learning post-training of LLMs on Ray, Megatron-Core and SGLang",
    python_requires=">=3.10",
    packages=find_packages(include=["roll", "roll.*", "workers", "workers.*"]),
    package_data={"roll": ["py.typed"]},
    ext_modules=_cpu_extensions() + cuda_exts,
    cmdclass={"build_ext": _tolerant(cuda_build_ext or build_ext)},
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
        "gpu": [
            "sglang>=0.4.6",
            "transformer-engine[pytorch]>=2.0",
        ],
    },
    entry_points={"console_scripts": ["roll=roll.cli:main"]},
    zip_safe=False,
)
