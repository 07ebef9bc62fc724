"""A `WorkerGroup`: N Ray actors of one worker class for one role, with ranks and a rendezvous.

Worker classes follow a small protocol (see workers/base.py): constructed as
`cls(config, rank=, world_size=, master_addr=, master_port=, **kwargs)`, and exposing
`parallel_info() -> {"dp_rank", "dp_size", "is_output"}` once initialised. Dispatch modes:
- `call(method, ...)`: one-to-all, same arguments, results of every rank;
- `dispatch_dp(method, batch, ...)`: split a Batch over the data-parallel ranks (TP/PP peers of a
  DP rank get the same shard), collect from the ranks that hold results, restore the input order.
Results are awaited with `ray.wait`, so a worker that dies fails the driver at once with its role
and rank instead of hanging on the ranks blocked in a collective with it; a call that outlives its
time limit (`TimeoutConfig`, chosen by method name through `CALL_TIMEOUTS`) fails the same way.
"""

import time
from collections.abc import Sequence
from typing import Any, Optional

from roll.config.timeouts import TimeoutConfig
from roll.distributed.batch import Batch
from roll.distributed.resource_manager import ResourceManager
from roll.utils.logging import get_logger

logger = get_logger(__name__)


# Worker method -> the TimeoutConfig field that limits it; any other method gets `default_s`.
CALL_TIMEOUTS = {
    "parallel_info": "init_s",
    "generate": "generate_s",
    "run_episodes": "generate_s",
    "compute_log_probs": "log_probs_s",
    "compute_values": "log_probs_s",
    "train": "train_s",
    "train_sft": "train_s",
    "sync_weights": "sync_s",
    "finish_weight_update": "sync_s",
    "join_weight_sync": "sync_s",
    "sync_weights_collective": "sync_s",
    "receive_weights": "sync_s",
    "save_checkpoint": "checkpoint_s",
    "export_hf": "checkpoint_s",
}


def _timeout_field(call: Optional[str]) -> str:
    return CALL_TIMEOUTS.get(call or "", "default_s")


def call_timeout_s(timeouts: TimeoutConfig, call: Optional[str]) -> float:
    """Seconds a call of worker method `call` may take: its `CALL_TIMEOUTS` field, else default_s."""
    return getattr(timeouts, _timeout_field(call))


class WorkerFailedError(RuntimeError):
    """A worker of a role raised, died or hung past its call's time limit; the message names the
    role, the rank and (for a time-out) the call."""


def _master_address() -> tuple[str, int]:
    from roll.distributed.ray_runtime import free_port, node_listen_address

    address = node_listen_address()
    return address, free_port(address)


class WorkerGroup:
    """The Ray actors of one role, created on the role's devices in rank order."""

    def __init__(
        self,
        role: str,
        worker_cls: type,
        config: Any,
        resources: Optional[ResourceManager],
        devices: Sequence[int],
        *,
        timeouts: Optional[TimeoutConfig] = None,
        **init_kwargs: Any,
    ) -> None:
        """`resources=None` places light CPU-only workers (e.g. reward) outside the placement group.
        `timeouts` limits each call's wait (default: `TimeoutConfig()`'s generous values)."""
        import ray

        self.role = role
        self.timeouts = timeouts if timeouts is not None else TimeoutConfig()
        self.world_size = len(devices)
        remote_cls: Any = ray.remote(worker_cls)

        def options(device: int) -> dict[str, Any]:
            return resources.actor_options(device) if resources is not None else {"num_cpus": 0}

        # The rendezvous address is taken on rank 0's node, inside rank 0's bundle.
        probe = ray.remote(_master_address).options(**options(devices[0]))
        try:
            master_addr, master_port = ray.get(probe.remote(), timeout=self.timeouts.init_s)
        except ray.exceptions.GetTimeoutError as err:
            raise WorkerFailedError(
                f"{role} rank 0: the rendezvous probe on device {devices[0]} did not run within "
                f"{self.timeouts.init_s:g} s (no free resources there?); raise timeouts.init_s if start-up is slow"
            ) from err
        self.workers = [
            remote_cls.options(**options(device)).remote(
                config,
                rank=rank,
                world_size=self.world_size,
                master_addr=master_addr,
                master_port=master_port,
                **init_kwargs,
            )
            for rank, device in enumerate(devices)
        ]
        self._parallel_info: Optional[list[dict[str, Any]]] = None
        logger.info("%s: %d worker(s) on devices %s", role, self.world_size, list(devices))

    # ------------------------------------------------------------------ waiting
    def wait(
        self,
        refs: list,
        ranks: Optional[Sequence[int]] = None,
        *,
        timeout_s: Optional[float] = None,
        call: Optional[str] = None,
    ) -> list:
        """Results of `refs` in order; the first failure raises naming the role and rank.

        All of `refs` must finish within `timeout_s` (default: the limit of method `call`); otherwise
        WorkerFailedError names the unfinished ranks and the call. The workers are left running:
        the driver fails the step and the run's teardown stops them.
        """
        import ray

        ranks = list(ranks) if ranks is not None else list(range(len(refs)))
        rank_of = {ref: rank for ref, rank in zip(refs, ranks)}
        limit = timeout_s if timeout_s is not None else call_timeout_s(self.timeouts, call)
        fix = "timeout_s" if timeout_s is not None else f"timeouts.{_timeout_field(call)}"
        deadline = time.monotonic() + limit
        pending = list(refs)
        while pending:
            remaining = max(deadline - time.monotonic(), 0.0)
            ready, pending = ray.wait(pending, num_returns=1, timeout=remaining)
            if not ready:
                raise WorkerFailedError(
                    self._timeout_message([rank_of[ref] for ref in pending], call, limit, fix)
                )
            try:
                ray.get(ready[0])
            except Exception as err:  # RayActorError (died) or RayTaskError (raised)
                raise WorkerFailedError(f"{self.role} rank {rank_of[ready[0]]} failed: {err}") from err
        return ray.get(list(refs))

    def _timeout_message(self, pending_ranks: list[int], call: Optional[str], limit: float, fix: str) -> str:
        first, *others = sorted(pending_ranks)
        also = f" (nor had ranks {others})" if others else ""
        name = repr(call) if call else "<unnamed>"
        return (
            f"{self.role} rank {first}: call {name} did not finish within {limit:g} s{also}; the worker "
            f"may be hung (see its log: a stuck collective, a dead peer), else the call is slower "
            f"than its limit: raise {fix}"
        )

    # ------------------------------------------------------------------ dispatch modes
    def call(self, method: str, *args: Any, **kwargs: Any) -> list:
        """One-to-all: every rank runs `method(*args, **kwargs)`; returns every rank's result."""
        refs = [getattr(w, method).remote(*args, **kwargs) for w in self.workers]
        return self.wait(refs, call=method)

    def call_async(self, method: str, *args: Any, **kwargs: Any) -> list:
        """One-to-all without waiting: the object refs, in rank order (await with `wait`)."""
        return [getattr(w, method).remote(*args, **kwargs) for w in self.workers]

    @property
    def parallel_info(self) -> list[dict[str, Any]]:
        """Per rank: dp_rank, dp_size, is_output (holds results of its DP shard)."""
        if self._parallel_info is None:
            return self.wait_ready()
        return self._parallel_info

    def wait_ready(self) -> list[dict[str, Any]]:
        """Block until every rank has finished its constructor (raises naming a rank that failed);
        returns (and caches) the ranks' parallel_info."""
        self._parallel_info = self.call("parallel_info")
        return self._parallel_info

    @property
    def dp_size(self) -> int:
        """Data-parallel size of the role."""
        return self.parallel_info[0]["dp_size"]

    def dispatch_dp(
        self,
        method: str,
        batch: Batch,
        *,
        shards: Optional[list[list[int]]] = None,
        collect: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Split `batch` over DP ranks (equal chunks, or the given index lists) and run `method`.

        With `collect`, the output ranks' Batches are concatenated back into the input order;
        otherwise the output ranks' raw results are returned, one per DP rank.
        """
        import ray

        dp = self.dp_size
        if shards is None:
            if len(batch) % dp:
                raise ValueError(
                    f"{self.role}: batch of {len(batch)} samples does not split over dp_size={dp}; "
                    f"pad it with Batch.pad_to_multiple({dp}) or pass shards"
                )
            per = len(batch) // dp
            shards = [list(range(r * per, (r + 1) * per)) for r in range(dp)]
        if len(shards) != dp:
            raise ValueError(f"{self.role}: got {len(shards)} shards for dp_size={dp}")
        parts = [ray.put(part) for part in batch.split_by_indices(shards)]
        refs = [
            getattr(w, method).remote(parts[info["dp_rank"]], **kwargs)
            for w, info in zip(self.workers, self.parallel_info)
        ]
        results = self.wait(refs, call=method)
        by_dp = {info["dp_rank"]: res for info, res in zip(self.parallel_info, results) if info["is_output"]}
        ordered = [by_dp[r] for r in range(dp)]
        if not collect:
            return ordered
        merged = Batch.concat(ordered)
        order = [i for shard in shards for i in shard]
        inverse = [0] * len(order)
        for position, index in enumerate(order):
            inverse[index] = position
        return merged.select(inverse)

    def kill(self) -> None:
        """Terminate the role's actors."""
        import ray

        for worker in self.workers:
            ray.kill(worker, no_restart=True)
