"""Device detection (cuda | cpu) and torch.distributed initialisation for one worker process.

`init_distributed()` is the single entry point a Megatron worker calls: it rendezvouses through
env:// (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), picks nccl on GPUs and gloo on the CPU, binds
the process to its GPU (LOCAL_RANK) and, on the CPU, applies the megatron CPU layer.
"""

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from roll.platform.cpu_megatron import apply_cpu_megatron_patches
from roll.utils.logging import get_logger

logger = get_logger(__name__)

_ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_BACKENDS = {"cuda": "nccl", "cpu": "gloo"}


def get_device_type() -> str:
    """ "cuda" when a CUDA GPU is visible, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def current_device() -> torch.device:
    """The device this process computes on: its current GPU, or the CPU."""
    if get_device_type() == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_distributed(backend: str | None = None, timeout_s: float = 600.0) -> None:
    """Initialise the default process group from env:// once; a no-op if already initialised.

    `backend` defaults to nccl on GPUs and gloo on the CPU. On the CPU the megatron CPU layer is
    applied (once per process) before returning, so megatron-core can be used right after.
    """
    device_type = get_device_type()
    missing = [name for name in _ENV_VARS if name not in os.environ]
    if missing and not dist.is_initialized():
        raise RuntimeError(
            f"init_distributed: environment variables {missing} are not set; the env:// rendezvous needs "
            f"{'/'.join(_ENV_VARS)} (set them, or launch with torchrun / tests/distributed/launcher.py)"
        )
    if device_type == "cpu":
        apply_cpu_megatron_patches()
    if dist.is_initialized():
        return
    backend = backend or _BACKENDS[device_type]
    if backend == "nccl" and device_type != "cuda":
        raise RuntimeError("init_distributed: backend='nccl' needs a CUDA GPU; use backend='gloo' on the CPU")
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        timeout=timedelta(seconds=timeout_s),
    )
    logger.debug("torch.distributed initialised: backend=%s world_size=%d", backend, dist.get_world_size())
