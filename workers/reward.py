"""Reward worker: scores decoded responses with the configured rule functions (batched).

A failing or timed-out function scores 0 for that sample and is counted in the metrics
(`reward/errors`, `reward/timeouts`); see roll/rewards/composite.py.
"""

from typing import Any

import torch

from roll.config.pipeline import RewardConfig
from roll.distributed.batch import Batch
from roll.rewards.composite import RewardComputer
from workers.base import Worker


class RewardWorker(Worker):
    """Computes `scores` (B,) for a Batch carrying `response_text` and `answer` per sample."""

    def __init__(self, config: RewardConfig, **rank_info: Any) -> None:
        super().__init__(config, **rank_info)
        self.computer = RewardComputer(config)

    def score(self, batch: Batch) -> Batch:
        """Return a Batch with `scores` (B,) float32 and the reward metrics in `meta["metrics"]`."""
        responses = [str(text) for text in batch["response_text"]]
        answers = [str(answer) for answer in batch["answer"]]
        scores, metrics = self.computer.score(responses, answers)
        out = Batch.from_dict({"scores": torch.as_tensor(scores, dtype=torch.float32)})
        out.meta["metrics"] = metrics
        return out

    def close(self) -> None:
        """Stop the scoring processes."""
        self.computer.close()
