"""Optimizer side of the Megatron strategy: DDP wrapping, the distributed Adam optimizer, the LR
schedule, and the finite-gradient check that lets a step with NaN/inf be skipped.

Kept apart from `megatron_train.py` so the training loop reads as forward/backward/step.
"""

import torch
from megatron.core.distributed import (
    DistributedDataParallel,
    DistributedDataParallelConfig,
    finalize_model_grads,
)
from megatron.core.optimizer import MegatronOptimizer, OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.transformer import TransformerConfig

from roll.config.worker import OptimizerConfig as RollOptimizerConfig
from roll.platform import current_device


def wrap_ddp(chunks: list[torch.nn.Module], config: TransformerConfig) -> list[DistributedDataParallel]:
    """Wrap model chunks in Megatron DDP with fp32 grad buffers and reduce-scatter for the
    distributed optimizer, and register the hooks the pipeline schedules call."""
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, overlap_grad_reduce=False, use_distributed_optimizer=True
    )
    # Only the first chunk gets bucketing, as in Megatron's own training loop: later virtual
    # stages finish their backward last and would otherwise start reductions too early.
    wrapped = [
        DistributedDataParallel(config, ddp_config, chunk, disable_bucketing=index > 0)
        for index, chunk in enumerate(chunks)
    ]
    no_sync = [chunk.no_sync for chunk in wrapped]
    config.no_sync_func = no_sync[0] if len(no_sync) == 1 else no_sync
    config.finalize_model_grads_func = finalize_model_grads
    return wrapped


def build_optimizer(
    chunks: list[DistributedDataParallel],
    optimizer_config: RollOptimizerConfig,
    params_dtype: torch.dtype,
    lr_decay_steps: int | None,
) -> tuple[MegatronOptimizer, OptimizerParamScheduler]:
    """Distributed AdamW over `chunks` and its warm-up + constant/cosine/linear schedule.

    The schedule is shifted by one step so that optimizer step k (0-based) uses the schedule's
    value at k + 1: with warm-up, no step is spent at lr = 0.
    """
    if optimizer_config.lr_schedule != "constant" and not lr_decay_steps:
        raise ValueError(
            f"optimizer.lr_schedule={optimizer_config.lr_schedule!r} needs the total number of optimizer "
            f"steps (lr_decay_steps={lr_decay_steps}); pass lr_decay_steps or use lr_schedule=constant"
        )
    megatron_config = OptimizerConfig(
        optimizer="adam",
        lr=optimizer_config.lr,
        min_lr=optimizer_config.min_lr,
        weight_decay=optimizer_config.weight_decay,
        adam_beta1=optimizer_config.adam_beta1,
        adam_beta2=optimizer_config.adam_beta2,
        adam_eps=optimizer_config.adam_eps,
        clip_grad=optimizer_config.grad_clip,
        bf16=params_dtype == torch.bfloat16,
        fp16=params_dtype == torch.float16,
        params_dtype=params_dtype,
        use_distributed_optimizer=True,
    )
    optimizer = get_megatron_optimizer(megatron_config, chunks)
    warmup = optimizer_config.warmup_steps
    decay_steps = max(lr_decay_steps or 0, warmup + 1)
    scheduler = OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=optimizer_config.lr,
        min_lr=optimizer_config.min_lr,
        lr_warmup_steps=warmup,
        lr_decay_steps=decay_steps,
        lr_decay_style=optimizer_config.lr_schedule,
        start_wd=optimizer_config.weight_decay,
        end_wd=optimizer_config.weight_decay,
        wd_incr_steps=decay_steps,
        wd_incr_style="constant",
    )
    scheduler.step(1)
    if params_dtype == torch.float16:
        chunks[0].config.grad_scale_func = optimizer.scale_loss
    return optimizer, scheduler


def grads_are_finite(chunks: list[DistributedDataParallel]) -> bool:
    """True when every rank's gradient buffers are finite (one all-reduce over the world).

    Each rank's buffer still holds its local contribution outside its reduce-scattered shard, so a
    NaN/inf produced anywhere is seen by at least one rank.
    """
    finite = all(
        bool(torch.isfinite(buffer.grad_data).all())
        for chunk in chunks
        for buffer in (*chunk.buffers, *chunk.expert_parallel_buffers)
    )
    flag = torch.tensor([0.0 if finite else 1.0], device=current_device())
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return flag.item() == 0.0
