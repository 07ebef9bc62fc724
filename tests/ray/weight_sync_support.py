"""Shared pieces of the weight-sync tests on a real local Ray cluster (test_weight_sync*.py).

The probe rollout worker lives here, not in a test module or conftest, because Ray workers import it by
module name (the `ray_cluster` fixture puts tests/ray on their PYTHONPATH). Also: the tiny model, the
trainer + engine groups built on it, fixed teacher-forced batches and the policy-update step.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from roll.config.algorithm import AlgorithmConfig
from roll.config.worker import OptimizerConfig, WorkerConfig
from roll.distributed.batch import Batch
from roll.distributed.resource_manager import ResourceManager, RolePlacement
from roll.distributed.worker_group import WorkerGroup
from roll.models.tiny import save_tiny_hf_model
from workers.actor import ActorWorker
from workers.infer import InferWorker

# Megatron pads a 96-token vocabulary for TP2, so the synced embedding and LM head must be unpadded.
VOCAB, BATCH, SEQ, PROMPT = 96, 4, 12, 5


class ProbeInferWorker(InferWorker):
    """The real rollout worker, plus a record of the weight buckets it loaded, a scoring probe and a
    switch that makes it exit (as a crashed process would) when its next bucket arrives."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.buckets: list[list[tuple[str, int]]] = []
        self.taken = 0
        self.crash = False

    async def update_weights(self, named_tensors):
        if self.crash:
            os._exit(1)
        self.buckets.append(
            [(name, tensor.numel() * tensor.element_size()) for name, tensor in named_tensors]
        )
        return await super().update_weights(named_tensors)

    def received_buckets(self) -> list[list[tuple[str, int]]]:
        """Every bucket loaded so far, as (HF name, bytes) per tensor."""
        return self.buckets

    def take_buckets(self) -> list[list[str]]:
        """The tensor names of the buckets loaded since the last call."""
        taken, self.taken = self.buckets[self.taken :], len(self.buckets)
        return [[name for name, _ in bucket] for bucket in taken]

    def crash_on_next_bucket(self) -> None:
        self.crash = True

    @torch.no_grad()
    def token_log_probs(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, S) log p(x_i | x_<i) under the engine's current weights, column 0 = 0 (full forward)."""
        logits = self.engine.model(input_ids).float()
        out = torch.zeros(input_ids.shape, dtype=torch.float32)
        out[:, 1:] = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, input_ids[:, 1:, None])[..., 0]
        return out


def save_tiny_model(tmp_path_factory) -> Path:
    """The tiny 2-layer Qwen2 both weight-sync modules train and serve."""
    return save_tiny_hf_model(
        "qwen2", tmp_path_factory.mktemp("model"), seed=3, vocab_size=VOCAB, num_hidden_layers=2
    )


@contextmanager
def trainer_and_engines(model: Path, **parallel) -> Iterator[tuple[WorkerGroup, WorkerGroup]]:
    """actor_train (Megatron on 2 CPU slots, `parallel` e.g. tensor_parallel=2) and 2 native
    ProbeInferWorker engines on the same slots; killed, with their placement, on exit."""
    resources = ResourceManager(
        [RolePlacement("actor_train", [0, 1]), RolePlacement("actor_infer", [0, 1])], use_gpu=False
    )
    train_cfg = WorkerConfig(
        model_path=str(model),
        **parallel,
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
    yield actor, engines
    actor.kill()
    engines.kill()
    resources.shutdown()


def fixed_batch(input_ids: torch.Tensor, prompt_length: int = PROMPT) -> Batch:
    """A teacher-forced batch of `input_ids` whose tokens after `prompt_length` are the response."""
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


def random_batch(seed: int) -> Batch:
    """fixed_batch of BATCH x SEQ random tokens drawn with `seed`."""
    return fixed_batch(torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(seed)))


def actor_log_probs(actor: WorkerGroup, batch: Batch) -> torch.Tensor:
    return actor.dispatch_dp("compute_log_probs", batch, key="log_probs", temperature=1.0)["log_probs"]


def engine_log_probs(engines: WorkerGroup, input_ids: torch.Tensor) -> torch.Tensor:
    """Engine rank 0's token_log_probs."""
    return engines.call("token_log_probs", input_ids)[0]


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


def assert_engines_match(engines: WorkerGroup, batch: Batch, expected: torch.Tensor) -> None:
    """Both engine replicas' token log-probs on `batch` equal `expected` (the trainer's)."""
    replicas = engines.call("token_log_probs", batch["input_ids"])
    assert len(replicas) == 2
    for replica in replicas:
        torch.testing.assert_close(replica, expected, atol=1e-5, rtol=0)
