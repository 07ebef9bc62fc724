"""Collective weight sync on a real local Ray cluster: Megatron PP2 senders -> 2 native engines.

After a policy update, `CollectiveWeightSync` has each pipeline stage's sender broadcast its HF-named
weights in turn over a gloo weight-update group; the engines' per-token log-probs then equal the
trainer's (teacher forced on a fixed batch). Also: tiny buckets, the object-store fallback through the
same driver interface, a member that dies mid-sync failing the sync with its role and rank, and (no
Ray) the bucket protocol on threads and the config checks. TP2 senders: tests/ray/test_weight_sync.py.
"""

import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from roll.config.algorithm import AlgorithmConfig
from roll.config.errors import ConfigError
from roll.config.pipeline import JobConfig
from roll.config.worker import OptimizerConfig, WorkerConfig
from roll.distributed.batch import Batch
from roll.distributed.ray_runtime import RayRuntime, free_port
from roll.distributed.resource_manager import ResourceManager, RolePlacement
from roll.distributed.weight_sync import CollectiveWeightSync, WeightSyncMember, make_weight_sync
from roll.distributed.worker_group import WorkerFailedError, WorkerGroup
from roll.models.tiny import save_tiny_hf_model
from workers.actor import ActorWorker
from workers.infer import InferWorker

pytest.importorskip("ray")

VOCAB, BATCH, SEQ, PROMPT = 96, 4, 12, 5
# ~16 KiB: bigger than any bias or norm, smaller than the embedding, so a stage takes many buckets.
TINY_BUCKET = 16 * 1024
LARGE_BUCKET = 64 * 2**20


class ProbeInferWorker(InferWorker):
    """The real rollout worker, plus a record of the buckets it loaded, a scoring probe and a switch
    that makes it exit (as a crashed process would) when its next bucket arrives."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.buckets: list[list[str]] = []
        self.crash = False

    async def update_weights(self, named_tensors):
        if self.crash:
            os._exit(1)
        self.buckets.append([name for name, _ in named_tensors])
        return await super().update_weights(named_tensors)

    def take_buckets(self) -> list[list[str]]:
        buckets, self.buckets = self.buckets, []
        return buckets

    def crash_on_next_bucket(self) -> None:
        self.crash = True

    @torch.no_grad()
    def token_log_probs(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, S) log p(x_i | x_<i) under the engine's current weights, column 0 = 0."""
        logits = self.engine.model(input_ids).float()
        out = torch.zeros(input_ids.shape, dtype=torch.float32)
        out[:, 1:] = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, input_ids[:, 1:, None])[..., 0]
        return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    model = save_tiny_hf_model(
        "qwen2", tmp_path_factory.mktemp("model"), seed=3, vocab_size=VOCAB, num_hidden_layers=2
    )
    # Ray workers import this module (the probe worker) by name: put its directory on their path.
    here = os.path.dirname(os.path.abspath(__file__))
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, previous) if p)
    try:
        with RayRuntime(num_cpus=2):
            resources = ResourceManager(
                [RolePlacement("actor_train", [0, 1]), RolePlacement("actor_infer", [0, 1])], use_gpu=False
            )
            train_cfg = WorkerConfig(
                model_path=str(model),
                pipeline_parallel=2,
                device_mapping=[0, 1],
                micro_batch_size=2,
                dtype="fp32",
                optimizer=OptimizerConfig(lr=1e-2, grad_clip=0.0),
            )
            infer_cfg = WorkerConfig(
                model_path=str(model), strategy={"name": "native"}, dtype="fp32", device_mapping=[0, 1]
            )
            actor = WorkerGroup(
                "actor_train", ActorWorker, train_cfg, resources, [0, 1], algorithm=AlgorithmConfig(), seed=0
            )
            engines = WorkerGroup("actor_infer", ProbeInferWorker, infer_cfg, resources, [0, 1], seed=0)
            actor.wait_ready()
            engines.wait_ready()
            sync = CollectiveWeightSync(actor, engines, bucket_bytes=LARGE_BUCKET, timeout_s=60)
            yield actor, engines, sync
            actor.kill()
            engines.kill()
            resources.shutdown()
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = previous


def fixed_batch(seed: int) -> Batch:
    input_ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(seed))
    response_mask = torch.zeros(BATCH, SEQ)
    response_mask[:, PROMPT:] = 1.0
    return Batch.from_dict(
        {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "position_ids": torch.arange(SEQ).expand(BATCH, SEQ).clone(),
            "response_mask": response_mask,
        }
    )


def trainer_log_probs(actor: WorkerGroup, batch: Batch) -> torch.Tensor:
    return actor.dispatch_dp("compute_log_probs", batch, key="log_probs", temperature=1.0)["log_probs"]


def update_policy(actor: WorkerGroup, batch: Batch, seed: int) -> torch.Tensor:
    """One PPO step with random advantages; returns the trainer's log-probs after it."""
    before = trainer_log_probs(actor, batch)
    advantages = (
        torch.randn(BATCH, SEQ, generator=torch.Generator().manual_seed(seed)) * batch["response_mask"]
    )
    extra = {"old_log_probs": before, "advantages": advantages, "returns": torch.zeros(BATCH, SEQ)}
    actor.dispatch_dp(
        "train",
        batch.union(Batch.from_dict(extra)),
        collect=False,
        mini_batch_size=BATCH,
        epochs=1,
        kl_coef=0.0,
        seed=0,
        temperature=1.0,
    )
    after = trainer_log_probs(actor, batch)
    assert (after - before)[batch["response_mask"].bool()].abs().max() > 1e-2, "the update changed nothing"
    return after


def assert_engines_match(engines: WorkerGroup, batch: Batch, expected: torch.Tensor) -> None:
    replicas = engines.call("token_log_probs", batch["input_ids"])
    assert len(replicas) == 2
    for replica in replicas:
        torch.testing.assert_close(replica, expected, atol=1e-5, rtol=0)


def test_pp2_senders_take_turns_one_bucket_per_stage(cluster):
    actor, engines, sync = cluster
    batch = fixed_batch(0)
    after = update_policy(actor, batch, seed=0)
    assert not torch.allclose(engines.call("token_log_probs", batch["input_ids"])[0], after, atol=1e-4)
    metrics = sync.sync()
    assert_engines_match(engines, batch, after)
    # Stage 0's sender (embedding, layer 0), then stage 1's (layer 1, final norm, LM head).
    for buckets in engines.call("take_buckets"):
        assert len(buckets) == 2
        assert "model.embed_tokens.weight" in buckets[0] and "model.layers.0.mlp.up_proj.weight" in buckets[0]
        assert "lm_head.weight" in buckets[1] and "model.layers.1.mlp.up_proj.weight" in buckets[1]
        assert metrics["sync/tensors"] == len(buckets[0]) + len(buckets[1])
    assert metrics["sync/buckets"] == 2 and metrics["time/sync_send"] > 0


def test_pp2_tiny_buckets_over_the_same_group(cluster):
    actor, engines, sync = cluster
    batch = fixed_batch(1)
    after = update_policy(actor, batch, seed=1)
    sync.bucket_bytes = TINY_BUCKET
    metrics = sync.sync()
    assert_engines_match(engines, batch, after)
    for buckets in engines.call("take_buckets"):
        assert len(buckets) == metrics["sync/buckets"] > 6
        names = [name for bucket in buckets for name in bucket]
        assert len(names) == len(set(names)) == metrics["sync/tensors"]


def test_object_store_fallback_through_the_same_interface(cluster):
    actor, engines, _ = cluster
    batch = fixed_batch(2)
    after = update_policy(actor, batch, seed=2)
    metrics = make_weight_sync("object_store", actor, engines, bucket_bytes=TINY_BUCKET, timeout_s=60).sync()
    assert_engines_match(engines, batch, after)
    assert metrics["sync/buckets"] == len(engines.call("take_buckets")[0]) > 6


def test_member_dying_mid_sync_fails_naming_role_and_rank(cluster):
    """Last of the Ray tests: it kills engine rank 1 and leaves the group broken."""
    actor, engines, _ = cluster
    sync = CollectiveWeightSync(actor, engines, bucket_bytes=TINY_BUCKET, timeout_s=20)
    sync.build()
    engines.workers[1].crash_on_next_bucket.remote()
    start = time.monotonic()
    with pytest.raises(WorkerFailedError, match=r"actor_infer rank 1 died"):
        sync.sync()
    assert time.monotonic() - start < 60
    assert not sync.ready  # the next sync builds a fresh group


# ---------------------------------------------------------------------------------- without Ray
def test_bucket_protocol_on_threads_mixed_dtypes_and_oversized_tensors():
    """One sender and two receivers in threads of this process, over a loopback gloo group."""
    port, world = free_port(), 3
    members: list = [None] * world

    def join(rank: int) -> None:
        members[rank] = WeightSyncMember(
            host="127.0.0.1", port=port, rank=rank, world_size=world, timeout_s=30,
            backend="gloo", device=torch.device("cpu"), listen_host="127.0.0.1",
        )  # fmt: skip

    run_threads(join, world)
    g = torch.Generator().manual_seed(0)
    tensors = [
        ("a", torch.randn(3, 5, generator=g)),
        ("b", torch.randn(7, generator=g).to(torch.bfloat16)),
        ("big", torch.randn(1000, generator=g)),  # 4000 bytes > the 256-byte bucket: sent alone
        ("ids", torch.arange(3)),
        ("scalar", torch.tensor(2.5)),
        ("empty", torch.empty(0, 4)),
        ("half", torch.randn(2, 3, generator=g).half()),
    ]
    loaded: dict[int, list[list[tuple[str, torch.Tensor]]]] = {1: [], 2: []}
    results: dict = {}
    with ThreadPoolExecutor(2) as pool:

        def apply_on(rank):
            # Clone: the views alias the receive buffer, which the next bucket but one overwrites.
            return lambda named: pool.submit(loaded[rank].append, [(n, t.clone()) for n, t in named])

        def run(rank: int) -> None:
            if rank == 0:
                results[0] = members[0].send(iter(tensors), 256)
            else:
                results[rank] = members[rank].receive(0, apply_on(rank))

        run_threads(run, world)
    assert results[0] == {"sync/tensors": 7.0, "sync/bytes": 4114.0, "sync/buckets": 3.0}
    for rank in (1, 2):
        assert results[rank] == 7
        assert [[n for n, _ in bucket] for bucket in loaded[rank]] == [
            ["a", "b"], ["big"], ["ids", "scalar", "empty", "half"]
        ]  # fmt: skip
        received = dict(pair for bucket in loaded[rank] for pair in bucket)
        for name, tensor in tensors:
            assert received[name].dtype == tensor.dtype and torch.equal(received[name], tensor), name
    for member in members:
        member.close()


def run_threads(fn, world: int) -> None:
    errors: list[BaseException] = []

    def guarded(rank: int) -> None:
        try:
            fn(rank)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=guarded, args=(rank,)) for rank in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads), "a member hung"


def test_config_validates_transport_and_timeout():
    assert JobConfig().weight_sync_transport == "collective"
    assert JobConfig(weight_sync_transport="object_store").weight_sync_timeout_s == 300.0
    with pytest.raises(
        ConfigError, match=re.escape("weight_sync_transport='nccl' is not one of collective|")
    ):
        JobConfig(weight_sync_transport="nccl")
    with pytest.raises(ConfigError, match="weight_sync_timeout_s=0"):
        JobConfig(weight_sync_timeout_s=0)
