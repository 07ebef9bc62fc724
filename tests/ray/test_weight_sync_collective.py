"""Collective weight sync on a real local Ray cluster: Megatron PP2 senders -> 2 native engines.

After a policy update, `CollectiveWeightSync` has each pipeline stage's sender broadcast its HF-named
weights in turn over a gloo weight-update group; the engines' per-token log-probs then equal the
trainer's (teacher forced on a fixed batch). Also: tiny buckets, the object-store fallback through the
same driver interface, a member that dies mid-sync failing the sync with its role and rank, and (no
Ray) the bucket protocol on threads and the config checks. TP2 senders: tests/ray/test_weight_sync.py.
"""

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from weight_sync_support import (
    assert_engines_match,
    random_batch,
    save_tiny_model,
    trainer_and_engines,
    update_policy,
)

from roll.config.errors import ConfigError
from roll.config.pipeline import JobConfig
from roll.distributed.ray_runtime import free_port
from roll.distributed.weight_sync import CollectiveWeightSync, WeightSyncMember, make_weight_sync
from roll.distributed.worker_group import WorkerFailedError

pytest.importorskip("ray")

# ~16 KiB: bigger than any bias or norm, smaller than the embedding, so a stage takes many buckets.
TINY_BUCKET = 16 * 1024
LARGE_BUCKET = 64 * 2**20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, ray_cluster):
    model = save_tiny_model(tmp_path_factory)
    with trainer_and_engines(model, pipeline_parallel=2) as (actor, engines):
        actor.wait_ready()
        engines.wait_ready()
        yield actor, engines, CollectiveWeightSync(actor, engines, bucket_bytes=LARGE_BUCKET, timeout_s=60)


def test_pp2_senders_take_turns_one_bucket_per_stage(cluster):
    actor, engines, sync = cluster
    batch = random_batch(0)
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
    batch = random_batch(1)
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
    batch = random_batch(2)
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
