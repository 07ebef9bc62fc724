"""Weight sync on a real local Ray cluster: actor_train (Megatron, TP2 on 2 CPU slots) -> 2 native engines.

One policy update changes the TP-sharded weights; the object-store transport (`ActorWorker.sync_weights`)
sends them as HF-named tensors in small buckets; afterwards the engines' per-token log-probs equal the
trainer's (teacher forced on a fixed batch, and on the engine's own greedy generations), and differ
from before. Then the collective transport (`CollectiveWeightSync`: TP rank 0 broadcasts flat buckets
over a gloo weight-update group) does the same with tiny buckets, and again over the same group.
PP2 senders and failures: tests/ray/test_weight_sync_collective.py.
"""

import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from roll.config.algorithm import AlgorithmConfig
from roll.config.worker import OptimizerConfig, WorkerConfig
from roll.distributed.batch import Batch
from roll.distributed.ray_runtime import RayRuntime
from roll.distributed.resource_manager import ResourceManager, RolePlacement
from roll.distributed.weight_sync import ALIGN, CollectiveWeightSync
from roll.distributed.worker_group import WorkerGroup
from roll.models.tiny import save_tiny_hf_model
from roll.strategies.engine import GenerationRequest, SamplingParams
from workers.actor import ActorWorker
from workers.infer import InferWorker

pytest.importorskip("ray")

# Megatron pads a 96-token vocabulary for TP2, so the synced embedding and LM head must be unpadded.
VOCAB, BATCH, SEQ, PROMPT = 96, 4, 12, 5
# ~16 KiB: bigger than any bias or norm, smaller than the embedding, so buckets hold 1..n tensors.
BUCKET_BYTES = 16 * 1024


class ProbeInferWorker(InferWorker):
    """The real rollout worker, plus a record of the weight buckets it received and a scoring probe."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.buckets: list[list[tuple[str, int]]] = []

    async def update_weights(self, named_tensors):
        self.buckets.append(
            [(name, tensor.numel() * tensor.element_size()) for name, tensor in named_tensors]
        )
        return await super().update_weights(named_tensors)

    def received_buckets(self) -> list[list[tuple[str, int]]]:
        return self.buckets

    @torch.no_grad()
    def token_log_probs(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, S) log p(x_i | x_<i) under the engine's current weights, column 0 = 0 (full forward)."""
        logits = self.engine.model(input_ids).float()
        out = torch.zeros(input_ids.shape, dtype=torch.float32)
        for i in range(1, input_ids.shape[1]):
            out[:, i] = torch.log_softmax(logits[:, i - 1], dim=-1).gather(1, input_ids[:, i : i + 1])[:, 0]
        return out


@pytest.fixture(scope="module")
def groups(tmp_path_factory):
    model = save_tiny_hf_model(
        "qwen2", tmp_path_factory.mktemp("model"), seed=3, vocab_size=VOCAB, num_hidden_layers=2
    )
    # Ray workers import this module (ProbeInferWorker) by name: put its directory on their path.
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
                tensor_parallel=2,
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
            infer = WorkerGroup("actor_infer", ProbeInferWorker, infer_cfg, resources, [0, 1], seed=0)
            yield model, actor, infer
            actor.kill()
            infer.kill()
            resources.shutdown()
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = previous


def fixed_batch(input_ids: torch.Tensor, prompt_length: int) -> Batch:
    size, width = input_ids.shape
    response_mask = torch.zeros(size, width)
    response_mask[:, prompt_length:] = 1.0
    return Batch.from_dict(
        {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "position_ids": torch.arange(width).expand(size, width).clone(),
            "response_mask": response_mask,
        }
    )


def actor_log_probs(actor: WorkerGroup, batch: Batch) -> torch.Tensor:
    return actor.dispatch_dp("compute_log_probs", batch, key="log_probs", temperature=1.0)["log_probs"]


def engine_log_probs(infer: WorkerGroup, input_ids: torch.Tensor) -> torch.Tensor:
    return infer.call("token_log_probs", input_ids)[0]


def hf_tensor_names(model_dir: Path) -> set[str]:
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        return set(f.keys())


def test_sync_after_update_makes_engine_match_trainer(groups):
    model_dir, actor, infer = groups
    generator = torch.Generator().manual_seed(0)
    batch = fixed_batch(torch.randint(0, VOCAB, (BATCH, SEQ), generator=generator), PROMPT)
    mask = batch["response_mask"].bool()

    before = actor_log_probs(actor, batch)
    torch.testing.assert_close(engine_log_probs(infer, batch["input_ids"]), before, atol=1e-5, rtol=0)

    advantages = torch.randn(BATCH, SEQ, generator=generator) * batch["response_mask"]
    train_batch = batch.union(
        Batch.from_dict(
            {"old_log_probs": before, "advantages": advantages, "returns": torch.zeros(BATCH, SEQ)}
        )
    )
    actor.dispatch_dp(
        "train",
        train_batch,
        collect=False,
        mini_batch_size=BATCH,
        epochs=1,
        kl_coef=0.0,
        seed=0,
        temperature=1.0,
    )
    after = actor_log_probs(actor, batch)
    assert (after - before)[mask].abs().max() > 1e-2, "the update did not change the policy"
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


def update_policy(actor: WorkerGroup, batch: Batch, seed: int) -> torch.Tensor:
    """One PPO step with random advantages; returns the trainer's log-probs after it."""
    before = actor_log_probs(actor, batch)
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
    after = actor_log_probs(actor, batch)
    assert (after - before)[batch["response_mask"].bool()].abs().max() > 1e-2, "the update changed nothing"
    return after


def test_collective_sync_tp2_tiny_buckets_both_engines_match(groups):
    model_dir, actor, infer = groups
    batch = fixed_batch(
        torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(2)), PROMPT
    )
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
