"""Loading of the compiled extensions `roll._C` (C++, pybind11) and `roll._C_cuda` (CUDA ops),
and the one-line log each op writes the first time it falls back to its Python implementation."""

import functools
import importlib
from types import ModuleType
from typing import Optional

from roll.utils.logging import get_logger

logger = get_logger(__name__)

_BUILD_HINT = "build it with `pip install --no-build-isolation -e .` or `python setup.py build_ext --inplace`"


@functools.cache
def _load(module_name: str) -> tuple[Optional[ModuleType], str]:
    if module_name == "roll._C_cuda":
        import torch  # the CUDA extension links against torch's libraries, load them first

        if not torch.cuda.is_available():
            return None, "no CUDA device"
    try:
        return importlib.import_module(module_name), ""
    except ImportError as error:
        return None, str(error)


def cpu_extension() -> Optional[ModuleType]:
    """`roll._C`, or None when it was not built."""
    return _load("roll._C")[0]


def cuda_extension() -> Optional[ModuleType]:
    """`roll._C_cuda`, or None when it was not built or no GPU is visible."""
    return _load("roll._C_cuda")[0]


@functools.cache
def log_fallback(op_name: str, module_name: str) -> None:
    """Say once per op that the compiled version is missing and the Python fallback runs."""
    reason = _load(module_name)[1] or "not built"
    logger.info(
        "%s: %s unavailable (%s); using the Python fallback (%s)", op_name, module_name, reason, _BUILD_HINT
    )
