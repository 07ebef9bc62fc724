"""Device detection (cuda | cpu) and torch.distributed initialisation for one worker process.

`init_distributed()` is the single entry point a Megatron worker calls: it rendezvouses through
the env:// variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), picks nccl on GPUs and gloo on
the CPU, binds the process to its GPU (LOCAL_RANK) and, on the CPU, applies the megatron CPU layer.
Rank 0's rendezvous store listens on MASTER_ADDR only (see roll/platform/network.py).
"""

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from roll.platform.cpu_megatron import apply_cpu_megatron_patches
from roll.platform.network import bound_tcp_store, is_ip_literal, is_loopback
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
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    timeout = timedelta(seconds=timeout_s)
    store = _rendezvous_store(rank, world_size, timeout)
    init_method = "env://" if store is None else None
    dist.init_process_group(
        backend=backend,
        init_method=init_method,
        store=store,
        rank=rank,
        world_size=world_size,
        timeout=timeout,
    )
    logger.debug("torch.distributed initialised: backend=%s world_size=%d", backend, dist.get_world_size())


def _rendezvous_store(rank: int, world_size: int, timeout: timedelta) -> dist.Store | None:
    """The rendezvous TCPStore, its server listening on MASTER_ADDR only; None leaves it to env://.

    env:// is kept when torchelastic's agent hosts the store, and when MASTER_ADDR is a hostname
    other than localhost: rank 0 may resolve it differently from its peers (e.g. to 127.0.1.1 via
    /etc/hosts), so binding to its own answer could lock them out.
    """
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        return None
    if not (is_ip_literal(host) or is_loopback(host)):
        return None
    if rank == 0:
        return bound_tcp_store(host, port, world_size, timeout)
    return dist.TCPStore(host, port, world_size, is_master=False, timeout=timeout)
