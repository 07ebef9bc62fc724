"""Rollout engine replicas on a real local Ray cluster: one worker per TP group of slots, requests
balanced over replicas and returned in request order."""

import pytest

from roll.config.cluster import replica_groups
from roll.config.worker import WorkerConfig
from roll.distributed.ray_runtime import RayRuntime
from roll.distributed.worker_group import WorkerGroup
from roll.models.tiny import save_tiny_hf_model
from roll.strategies.engine import GenerationRequest, SamplingParams, generate_on_replicas
from workers.infer import InferWorker

pytest.importorskip("ray")


def test_requests_spread_over_tp_group_replicas_and_come_back_in_order(tmp_path):
    model_dir = save_tiny_hf_model("qwen2", tmp_path / "model")
    config = WorkerConfig(
        model_path=str(model_dir), strategy={"name": "native"}, tensor_parallel=2, device_mapping=[0, 1, 2, 3]
    )
    replicas = replica_groups(config.device_mapping, config.tensor_parallel)
    assert replicas == [[0, 1], [2, 3]]
    with RayRuntime(num_cpus=2):
        infer = WorkerGroup(
            "actor_infer", InferWorker, config, None, [group[0] for group in replicas], seed=0
        )
        sampling = SamplingParams(temperature=0.0, max_new_tokens=3)
        requests = [
            GenerationRequest(request_id=f"r{i}", prompt_ids=list(range(1, 2 + i)), sampling=sampling)
            for i in range(6)
        ]
        outputs = generate_on_replicas(infer, requests)
        assert [o.request_id for o in outputs] == [r.request_id for r in requests]
        assert [o.prompt_ids for o in outputs] == [r.prompt_ids for r in requests]
        stats = infer.call("stats")
        assert len(stats) == 2 and all(s["prefill_tokens"] > 0 for s in stats)  # both replicas served
        assert sum(s["prefill_tokens"] for s in stats) == sum(len(r.prompt_ids) for r in requests)
        assert infer.call("outstanding_tokens") == [0, 0]
