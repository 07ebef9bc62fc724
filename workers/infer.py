"""Rollout worker: hosts a rollout engine (native on CPU, SGLang on GPUs) behind the engine protocol.

An async Ray actor, so `abort` can run while `generate` is in flight. Weight sync arrives either as
buckets of HF-named tensors from actor_train (`update_weights`, the object-store transport) or over
a weight-update process group (`join_weight_sync` + `receive_weights`, the collective transport of
roll/distributed/weight_sync.py); both end in `update_weights`.
"""

import asyncio
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import torch

from roll.config.worker import WorkerConfig
from roll.distributed.weight_sync import WeightSyncMember, join_group, member_of
from roll.platform import current_device
from roll.strategies.engine import GenerationOutput, GenerationRequest, request_cost
from roll.strategies.registry import build_rollout_engine
from workers.base import Worker


class InferWorker(Worker):
    """One rollout engine replica (a data-parallel rank of actor_infer)."""

    def __init__(self, config: WorkerConfig, *, seed: int = 0, **rank_info: Any) -> None:
        super().__init__(config, **rank_info)
        self.engine = build_rollout_engine(config, seed=seed + self.rank)
        self.weight_version = 0
        self._outstanding = 0  # tokens of the requests now in `generate` (n x (prompt + max_new_tokens))
        self.weight_sync_groups: dict[str, WeightSyncMember] = {}
        """Weight-sync groups this replica receives in, by name (built by the driver at the first sync)."""

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        """Complete every request (n samples each)."""
        cost = sum(request_cost(r) for r in requests)
        self._outstanding += cost
        try:
            return await self.engine.generate(list(requests))
        finally:
            self._outstanding -= cost

    async def outstanding_tokens(self) -> int:
        """Token budget of the requests this replica is working on (callers balance replicas by it)."""
        return self._outstanding

    async def update_weights(self, named_tensors: Sequence[tuple[str, torch.Tensor]]) -> int:
        """Copy one bucket of HF-named tensors into the engine; returns the number of tensors."""
        await self.engine.update_weights(named_tensors)
        return len(named_tensors)

    async def join_weight_sync(self, name: str, **member_args: Any) -> None:
        """Join weight-sync group `name` as a receiver (returns once every member has joined)."""
        await asyncio.to_thread(
            join_group, self.weight_sync_groups, name, device=current_device(), **member_args
        )

    async def receive_weights(self, name: str, sources: Sequence[int]) -> int:
        """Receive one sync over group `name`, stage by stage from the group ranks `sources`; each
        bucket goes to `update_weights` as views of the receive buffer. Returns the tensor count."""
        member = member_of(self.weight_sync_groups, name)
        loop = asyncio.get_running_loop()

        # The blocking receive loop runs in a thread so the event loop stays free; buckets are handed
        # back to the loop because the engine's update takes its asyncio model lock there.
        def apply(named: list[tuple[str, torch.Tensor]]) -> Future:
            return asyncio.run_coroutine_threadsafe(self.update_weights(named), loop)

        def receive_all() -> int:
            return sum(member.receive(src, apply) for src in sources)

        return await asyncio.to_thread(receive_all)

    async def finish_weight_update(self) -> int:
        """Mark the end of a full weight sync; returns the new weight version."""
        self.weight_version += 1
        return self.weight_version

    async def abort(self, request_ids: Sequence[str]) -> None:
        """Stop the given in-flight requests; they return with finish_reason "abort"."""
        await self.engine.abort(list(request_ids))

    async def stats(self) -> dict[str, Any]:
        """Engine counters (prefill/decode tokens), for metrics."""
        return dict(getattr(self.engine, "stats", {}))
