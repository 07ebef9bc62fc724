"""Weight sync on a real local Ray cluster: actor_train (Megatron, TP2 on 2 CPU slots) -> 2 native engines.

One policy update changes the TP-sharded weights; the object-store transport (`ActorWorker.sync_weights`)
sends them as HF-named tensors in small buckets; afterwards the engines' per-token log-probs equal the
trainer's (teacher forced on a fixed batch, and on the engine's own greedy generations), and differ
from before. Then the collective transport (`CollectiveWeightSync`: TP rank 0 broadcasts flat buckets
over a gloo weight-update group) does the same with tiny buckets, and again over the same group.
PP2 senders and failures: tests/ray/test_weight_sync_collective.py.
"""

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from weight_sync_support import (
    BATCH,
    PROMPT,
    SEQ,
    VOCAB,
    actor_log_probs,
    engine_log_probs,
    fixed_batch,
    random_batch,
    save_tiny_model,
    trainer_and_engines,
    update_policy,
)

from roll.distributed.weight_sync import ALIGN, CollectiveWeightSync
from roll.strategies.engine import GenerationRequest, SamplingParams

pytest.importorskip("ray")

# ~16 KiB: bigger than any bias or norm, smaller than the embedding, so buckets hold 1..n tensors.
BUCKET_BYTES = 16 * 1024


@pytest.fixture(scope="module")
def groups(tmp_path_factory, ray_cluster):
    model = save_tiny_model(tmp_path_factory)
    with trainer_and_engines(model, tensor_parallel=2) as (actor, infer):
        yield model, actor, infer


def hf_tensor_names(model_dir: Path) -> set[str]:
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        return set(f.keys())


def test_sync_after_update_makes_engine_match_trainer(groups):
    model_dir, actor, infer = groups
    batch = random_batch(0)

    before = actor_log_probs(actor, batch)
    torch.testing.assert_close(engine_log_probs(infer, batch["input_ids"]), before, atol=1e-5, rtol=0)

    after = update_policy(actor, batch, seed=0)
    # Training alone leaves the engine on the old weights.
    torch.testing.assert_close(engine_log_probs(infer, batch["input_ids"]), before, atol=1e-5, rtol=0)

    sent = actor.call("sync_weights", infer.workers, BUCKET_BYTES)
    infer.call("finish_weight_update")
    torch.testing.assert_close(engine_log_probs(infer, batch["input_ids"]), after, atol=1e-5, rtol=0)

    # Every HF tensor arrives exactly once, from TP rank 0 only, in buckets that close at the size limit.
    buckets = infer.call("received_buckets")[0]
    names = [name for bucket in buckets for name, _ in bucket]
    assert len(buckets) > 1
    assert sorted(names) == sorted(hf_tensor_names(model_dir))
    assert [s["sync/tensors"] for s in sent] == [len(names), 0.0]
    for bucket in buckets[:-1]:
        sizes = [size for _, size in bucket]
        assert sum(sizes) >= BUCKET_BYTES > sum(sizes[:-1])


def test_greedy_generation_log_probs_match_trainer_after_sync(groups):
    _, actor, infer = groups
    # One bucket larger than the whole model: the single-flush path.
    actor.call("sync_weights", infer.workers, 2**30)
    infer.call("finish_weight_update")
    generator = torch.Generator().manual_seed(1)
    prompts = torch.randint(0, VOCAB, (BATCH, PROMPT), generator=generator)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=SEQ - PROMPT)
    requests = [
        GenerationRequest(request_id=f"probe-{i}", prompt_ids=row.tolist(), sampling=greedy)
        for i, row in enumerate(prompts)
    ]
    outputs = infer.call("generate", requests)[0]
    samples = [output.samples[0] for output in outputs]
    assert all(len(s.token_ids) == SEQ - PROMPT for s in samples)  # no stop ids: full length
    input_ids = torch.cat([prompts, torch.tensor([s.token_ids for s in samples])], dim=1)
    engine = torch.tensor([s.logprobs for s in samples])
    trainer = actor_log_probs(actor, fixed_batch(input_ids, PROMPT))[:, PROMPT:]
    torch.testing.assert_close(engine, trainer, atol=1e-5, rtol=0)


def test_collective_sync_tp2_tiny_buckets_both_engines_match(groups):
    model_dir, actor, infer = groups
    batch = random_batch(2)
    after = update_policy(actor, batch, seed=2)
    assert not torch.allclose(engine_log_probs(infer, batch["input_ids"]), after, atol=1e-4)
    seen = [len(buckets) for buckets in infer.call("received_buckets")]

    sync = CollectiveWeightSync(actor, infer, bucket_bytes=BUCKET_BYTES, timeout_s=60)
    metrics = sync.sync()
    for replica in infer.call("token_log_probs", batch["input_ids"]):
        torch.testing.assert_close(replica, after, atol=1e-5, rtol=0)

    # Both replicas load every HF tensor once, in buckets of at most BUCKET_BYTES (aligned offsets;
    # a bigger tensor travels alone); the metrics count what the one sender (TP rank 0) sent.
    for before, buckets in zip(seen, infer.call("received_buckets")):
        buckets = buckets[before:]
        assert len(buckets) > 4
        for bucket in buckets:
            sizes = [size for _, size in bucket]
            assert (
                len(sizes) == 1 or sum(-(-s // ALIGN) * ALIGN for s in sizes[:-1]) + sizes[-1] <= BUCKET_BYTES
            )
        assert sorted(name for bucket in buckets for name, _ in bucket) == sorted(hf_tensor_names(model_dir))
        assert metrics["sync/buckets"] == len(buckets)
        assert metrics["sync/bytes"] == sum(size for bucket in buckets for _, size in bucket)
    assert metrics["sync/tensors"] == len(hf_tensor_names(model_dir))
    assert metrics["time/sync_send"] > 0

    # The next step's sync reuses the group built by the first one.
    after = update_policy(actor, batch, seed=3)
    sync.sync()
    for replica in infer.call("token_log_probs", batch["input_ids"]):
        torch.testing.assert_close(replica, after, atol=1e-5, rtol=0)
