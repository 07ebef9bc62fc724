"""Shared pytest set-up: marker handling (slow, gpu) and loopback-only Ray for every test."""

import os

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    run_slow = os.environ.get("ROLL_SLOW_TESTS") == "1" or "slow" in (config.getoption("-m") or "")
    has_cuda = _cuda_available()
    skip_slow = pytest.mark.skip(reason="slow test: set ROLL_SLOW_TESTS=1 or pass -m slow")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
