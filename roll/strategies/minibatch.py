"""PPO-style update loop over one rollout shard: epochs x shuffled mini-batches, one optimizer step each.

Shared by the actor and critic workers (the same loop, different loss functions).
"""

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

from roll.distributed.batch import Batch


def train_mini_batches(
    train_step: Callable[[Batch], dict[str, float]],
    batch: Batch,
    *,
    mini_batch_size: int,
    epochs: int,
    seed: int,
) -> dict[str, float]:
    """Run `train_step` on `epochs` passes of shuffled mini-batches of `batch`; mean metrics over steps.

    `mini_batch_size` counts this data-parallel rank's samples per optimizer step and must divide
    len(batch). The shuffle is seeded identically on every rank of the group so TP/PP peers agree.
    Non-finite values (e.g. the grad norm of a skipped step) are left out of the means.
    """
    if len(batch) % mini_batch_size:
        raise ValueError(
            f"mini-batch of {mini_batch_size} samples per rank does not divide the shard of {len(batch)}; "
            "make algorithm.mini_batch_size divide rollout_batch_size x num_samples / dp"
        )
    generator = torch.Generator().manual_seed(seed)
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    steps = 0
    for _ in range(epochs):
        order = torch.randperm(len(batch), generator=generator)
        for start in range(0, len(batch), mini_batch_size):
            metrics = train_step(batch.select(order[start : start + mini_batch_size]))
            steps += 1
            for name, value in metrics.items():
                if math.isfinite(value):
                    sums[name] += value
                    counts[name] += 1
    out: dict[str, Any] = {name: sums[name] / counts[name] for name in sums}
    out["optimizer_steps"] = float(steps)
    return out
