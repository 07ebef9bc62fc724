"""Rollout worker: hosts a rollout engine (native on CPU, SGLang on GPUs) behind the engine protocol.

An async Ray actor, so `abort` can run while `generate` is in flight. Weight sync arrives as
buckets of HF-named tensors from actor_train (`update_weights`).
"""

from collections.abc import Sequence
from typing import Any

import torch

from roll.config.worker import WorkerConfig
from roll.strategies.engine import GenerationOutput, GenerationRequest
from roll.strategies.registry import build_rollout_engine
from workers.base import Worker


class InferWorker(Worker):
    """One rollout engine replica (a data-parallel rank of actor_infer)."""

    def __init__(self, config: WorkerConfig, *, seed: int = 0, **rank_info: Any) -> None:
        super().__init__(config, **rank_info)
        self.engine = build_rollout_engine(config, seed=seed + self.rank)
        self.weight_version = 0

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        """Complete every request (n samples each)."""
        return await self.engine.generate(list(requests))

    async def update_weights(self, named_tensors: Sequence[tuple[str, torch.Tensor]]) -> int:
        """Copy one bucket of HF-named tensors into the engine; returns the number of tensors."""
        await self.engine.update_weights(named_tensors)
        return len(named_tensors)

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
