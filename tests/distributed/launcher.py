"""Run a function on N real processes joined by a gloo process group (multi-process tests).

    results = run_distributed(fn, 4, arg1, arg2, timeout=120)

Each process gets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR=127.0.0.1/MASTER_PORT, where the parent
already serves the rendezvous store on a port the OS picked (no race for a "free" port with other
test runs), calls `roll.platform.init_distributed()` (gloo + the megatron CPU layer) and then `fn(*args)`.
`fn` must be a module-level (picklable) function. Returns the list of per-rank return values; a
failure on any rank raises RuntimeError carrying that rank's traceback, and a hang past `timeout`
seconds kills the group and raises TimeoutError.
"""

import os
import pickle
import queue
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch.multiprocessing as mp
from torch.distributed import TCPStore


def _worker(rank: int, world_size: int, port: int, fn: Callable, args: tuple, results: Any) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        # Every rank is a client of the store the parent hosts (torch's env:// agent-store mode).
        TORCHELASTIC_USE_AGENT_STORE="True",
        OMP_NUM_THREADS="1",
    )
    try:
        import torch

        torch.set_num_threads(1)
        import torch.distributed as dist

        from roll.platform import init_distributed

        init_distributed()
        # Plain pickle bytes: a tensor put on the queue as-is travels as a shared-memory handle that
        # dies with this process, racing the parent's read.
        value = pickle.dumps(fn(*args))
        results.put((rank, True, value))
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:
        results.put((rank, False, traceback.format_exc()))


def run_distributed(fn: Callable, world_size: int, *args: Any, timeout: float = 120.0) -> list[Any]:
    """Run `fn(*args)` on `world_size` spawned gloo processes; return the per-rank results."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    store = TCPStore("127.0.0.1", 0, world_size, is_master=True, wait_for_workers=False)
    port = store.port
    procs = [
        ctx.Process(target=_worker, args=(rank, world_size, port, fn, args, results), daemon=True)
        for rank in range(world_size)
    ]
    for proc in procs:
        proc.start()
    outcome: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(outcome) < world_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"run_distributed({fn.__name__}, world_size={world_size}) timed out after {timeout}s; "
                    f"ranks {sorted(set(range(world_size)) - set(outcome))} did not finish"
                )
            try:
                rank, ok, value = results.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0) and r not in outcome]
                if dead:
                    raise RuntimeError(f"rank {dead[0]} exited with code {procs[dead[0]].exitcode}") from None
                continue
            if not ok:
                raise RuntimeError(f"rank {rank} failed:\n{value}")
            outcome[rank] = pickle.loads(value)
        for proc in procs:
            proc.join(timeout=max(deadline - time.monotonic(), 1.0))
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
    return [outcome[rank] for rank in range(world_size)]
