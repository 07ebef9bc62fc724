"""Shared pieces of the MegatronTrainStrategy tests: tiny model, fixed batch, worker configs, losses,
and the HF-transformers reference for per-token log-probs and entropy.

The rank functions run inside processes started by tests/distributed/launcher.py and return plain
Python lists (tensors cannot cross the result queue after the worker exits).
"""

from pathlib import Path
from typing import Any, Optional

import torch

from roll.config.algorithm import AlgorithmConfig
from roll.config.worker import OptimizerConfig, WorkerConfig
from roll.distributed.batch import Batch

NUM_LAYERS = 4  # divisible by PP2 x VPP2
BATCH, SEQ, PROMPT = 4, 12, 4
LENGTHS = (12, 9, 7, 10)  # right-padded rows of different lengths
STEPS = 3


def save_model(tmp_path: Path, arch: str = "qwen2") -> str:
    from roll.models.tiny import save_tiny_hf_model

    return str(save_tiny_hf_model(arch, tmp_path / arch, seed=0, num_hidden_layers=NUM_LAYERS))


def make_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """A fixed right-padded batch with prompts, responses, PPO inputs and critic targets."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 128, (BATCH, SEQ), generator=gen)
    positions = torch.arange(SEQ).expand(BATCH, SEQ)
    attention_mask = (positions < torch.tensor(LENGTHS).unsqueeze(1)).long()
    input_ids = input_ids * attention_mask
    response_mask = ((positions >= PROMPT) & attention_mask.bool()).float()
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": positions.clone(),
        "response_mask": response_mask,
        "advantages": torch.randn(BATCH, SEQ, generator=gen) * response_mask,
        "old_log_probs": (-4.8 + 0.3 * torch.randn(BATCH, SEQ, generator=gen)) * response_mask,
        "values": 0.1 * torch.randn(BATCH, SEQ, generator=gen) * response_mask,
        "returns": torch.randn(BATCH, SEQ, generator=gen) * response_mask,
    }


def dp_slice(batch: dict[str, torch.Tensor], dp_rank: int, dp_size: int) -> dict[str, torch.Tensor]:
    """This data-parallel replica's contiguous share of the rows."""
    rows = BATCH // dp_size
    return {name: value[dp_rank * rows : (dp_rank + 1) * rows] for name, value in batch.items()}


def worker_config(
    model_dir: str,
    world: int,
    *,
    tp: int = 1,
    pp: int = 1,
    vpp: Optional[int] = None,
    sp: bool = False,
    trainable: bool = True,
    checkpoint_dir: Optional[str] = None,
    dtype: str = "fp32",
    **optimizer: Any,
) -> WorkerConfig:
    opt = {"lr": 1e-3, "grad_clip": 1.0, "weight_decay": 0.01, **optimizer}
    return WorkerConfig(
        model_path=model_dir,
        tensor_parallel=tp,
        pipeline_parallel=pp,
        virtual_pipeline_parallel=vpp,
        sequence_parallel=sp,
        device_mapping=list(range(world)),
        micro_batch_size=1,
        dtype=dtype,
        optimizer=OptimizerConfig(**opt) if trainable else None,
        checkpoint_dir=checkpoint_dir,
    )


def nll_loss(outputs: dict[str, torch.Tensor], micro: dict[str, torch.Tensor]):
    """Token-mean negative log-likelihood of the response tokens, plus their mean entropy."""
    mask = micro["response_mask"]
    loss = -(outputs["log_probs"] * mask).sum() / mask.sum()
    return loss, {"entropy": ((outputs["entropy"] * mask).sum() / mask.sum()).detach()}


def ppo_loss():
    from roll.algorithms.loss_fns import make_actor_loss_fn

    return make_actor_loss_fn(AlgorithmConfig(use_kl_loss=False))


def critic_loss():
    from roll.algorithms.loss_fns import make_critic_loss_fn

    return make_critic_loss_fn(AlgorithmConfig())


def train(strategy, batch: dict[str, torch.Tensor], loss_fn, steps: int = STEPS) -> list[dict[str, float]]:
    """`steps` optimizer steps on this rank's share of `batch`."""
    share = Batch(dp_slice(batch, strategy.data_parallel_rank, strategy.data_parallel_size))
    return [strategy.train_step(share, loss_fn) for _ in range(steps)]


def hf_reference(model_dir: str, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(log_probs, entropy) (B, S) from transformers' full-vocab logits, aligned and masked like the strategy."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"]).logits.float()
    log_softmax = torch.log_softmax(logits[:, :-1], dim=-1)
    token_lp = log_softmax.gather(-1, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
    entropy = -(log_softmax.exp() * log_softmax).sum(-1)
    mask = batch["attention_mask"].float()
    pad = torch.zeros(BATCH, 1)
    return torch.cat([pad, token_lp], 1) * mask, torch.cat([pad, entropy], 1) * mask


def assert_metrics_close(
    got: list[dict], expected: list[dict], keys=("loss", "grad_norm"), rtol: float = 1e-5
):
    assert len(got) == len(expected)
    for step, (g, e) in enumerate(zip(got, expected)):
        for key in keys:
            assert abs(g[key] - e[key]) <= rtol * abs(e[key]) + 1e-7, (
                f"step {step} {key}: {g[key]} vs {e[key]}"
            )
