"""Batch through a real local Ray cluster (127.0.0.1, 1 CPU): object store round trip and an actor call."""

import os
import sys

import numpy as np
import pytest
import torch

from roll.distributed.batch import Batch

ray = pytest.importorskip("ray")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():  # another test module of this session owns the cluster
        yield
        return
    ray.init(
        num_cpus=1,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": REPO_ROOT, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}},
    )
    # The actor class lives in this test module, which Ray workers cannot import by name.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


def make_batch(size: int = 4, seq: int = 6) -> Batch:
    generator = torch.Generator().manual_seed(0)
    return Batch(
        tensors={
            "input_ids": torch.randint(0, 1000, (size, seq), generator=generator),
            "old_log_probs": torch.randn(size, seq, generator=generator).to(torch.bfloat16),
            "response_mask": (torch.rand(size, seq, generator=generator) > 0.3).float(),
            "scores": torch.randn(size, generator=generator),
        },
        non_tensors={
            "prompt": [f"prompt {i}" for i in range(size)],
            "info": [{"turns": i} for i in range(size)],
        },
        meta={"step": 7},
    )


def assert_same(a: Batch, b: Batch) -> None:
    assert a.keys() == b.keys() and a.meta == b.meta
    for key, value in a.tensors.items():
        assert b[key].dtype == value.dtype and torch.equal(b[key], value), key
    for key, value in a.non_tensors.items():
        assert list(b[key]) == list(value), key


@ray.remote
class Doubler:
    def double_scores(self, batch: Batch) -> Batch:
        # In-place writes on a received batch must touch only this process's copy.
        batch.scores.mul_(2)
        batch["seen_by"] = np.array(["actor"] * len(batch), dtype=object)
        return batch


def test_object_store_round_trip_is_exact_and_private(local_ray):
    batch = make_batch()
    ref = ray.put(batch)
    first = ray.get(ref)
    assert_same(batch, first)
    first.old_log_probs.add_(1)
    assert_same(batch, ray.get(ref))


def test_actor_receives_and_returns_batch(local_ray):
    batch = make_batch()
    ref = ray.put(batch)
    actor = Doubler.remote()
    result = ray.get(actor.double_scores.remote(ref))
    assert torch.equal(result.scores, batch.scores * 2)
    assert list(result["seen_by"]) == ["actor"] * 4
    assert result.old_log_probs.dtype == torch.bfloat16
    assert torch.equal(result.old_log_probs, batch.old_log_probs)
    assert_same(batch, ray.get(ref))
    parts = ray.get([actor.double_scores.remote(part) for part in batch.chunk(2)])
    assert torch.equal(Batch.concat(parts).scores, batch.scores * 2)
    ray.kill(actor)
