"""WorkerGroup on a real local Ray cluster (127.0.0.1): rendezvous, dispatch modes, fail-fast."""

import os

import pytest
import torch

from roll.distributed.batch import Batch
from roll.distributed.resource_manager import ResourceManager, RolePlacement
from roll.distributed.worker_group import WorkerFailedError, WorkerGroup
from workers.base import Worker

ray = pytest.importorskip("ray")


class SumWorker(Worker):
    """Joins a gloo group; DP size = world / 2 when `pairs` (ranks 2k, 2k+1 form one 'TP pair')."""

    def __init__(self, config, *, pairs: bool = False, **rank_info):
        super().__init__(config, **rank_info)
        import torch.distributed as dist

        dist.init_process_group("gloo")
        self.pairs = pairs

    def parallel_info(self):
        if not self.pairs:
            return super().parallel_info()
        return {"dp_rank": self.rank // 2, "dp_size": self.world_size // 2, "is_output": self.rank % 2 == 0}

    def all_reduce_rank(self) -> float:
        import torch.distributed as dist

        value = torch.tensor([float(self.rank)])
        dist.all_reduce(value)
        return float(value)

    def double(self, batch: Batch) -> Batch:
        return Batch.from_dict({"x": batch["x"] * 2, "owner": torch.full((len(batch),), self.rank)})

    def die(self) -> None:
        if self.rank == 1:
            os._exit(1)
        import torch.distributed as dist

        dist.barrier()


def make_group(world: int, **kwargs) -> tuple[WorkerGroup, ResourceManager]:
    resources = ResourceManager(
        [RolePlacement("test", list(range(world)))], use_gpu=False, cpus_per_device=0.5
    )
    return WorkerGroup("test", SumWorker, None, resources, list(range(world)), **kwargs), resources


def test_rendezvous_and_one_to_all(ray_cluster):
    group, resources = make_group(2)
    try:
        assert group.call("all_reduce_rank") == [1.0, 1.0]  # 0 + 1 on both ranks
        assert group.call("ping") == [0, 1]
    finally:
        group.kill()
        resources.shutdown()


def test_dispatch_dp_with_shards_restores_order(ray_cluster):
    group, resources = make_group(4, pairs=True)
    try:
        batch = Batch.from_dict({"x": torch.arange(6.0)})
        shards = [[5, 0, 2], [1, 3, 4]]
        out = group.dispatch_dp("double", batch, shards=shards)
        assert torch.equal(out["x"], torch.arange(6.0) * 2)
        # Rows of shard 0 come from DP rank 0's output rank (global rank 0), shard 1 from rank 2.
        expected_owner = torch.tensor([0, 2, 0, 2, 2, 0])
        assert torch.equal(out["owner"], expected_owner)
        with pytest.raises(ValueError, match="does not split over dp_size=2"):
            group.dispatch_dp("double", Batch.from_dict({"x": torch.arange(5.0)}))
    finally:
        group.kill()
        resources.shutdown()


def test_dead_worker_fails_fast_with_role_and_rank(ray_cluster):
    group, resources = make_group(2)
    try:
        with pytest.raises(WorkerFailedError, match="test rank 1 failed"):
            group.call("die")
    finally:
        group.kill()
        resources.shutdown()
