"""Checkpoints of the Megatron strategy: model, optimizer, LR schedule, RNG, step; sharded per rank.

Layout of a checkpoint directory:
    common.pt                  step, caller's `extra`, LR schedule, parallel layout   (rank 0)
    model_pp{P}_tp{T}.pt       model chunks and optimizer hyper-parameters            (DP rank 0)
    rank{R}.pt                 this rank's distributed-optimizer shard and RNG states (every rank)

Every file is written by the rank that owns its content, so a save costs no communication. A
checkpoint is restored with the same TP/PP/VPP/world layout (the optimizer shards follow Megatron's
DP bucket layout); to change the layout, export to HF (`export_hf`) and start from that.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel

from roll.platform import get_device_type

if TYPE_CHECKING:
    from roll.strategies.megatron_train import MegatronTrainStrategy


def _layout(strategy: "MegatronTrainStrategy") -> dict[str, Any]:
    cfg = strategy.worker_config
    return {
        "tensor_parallel": cfg.tensor_parallel,
        "pipeline_parallel": cfg.pipeline_parallel,
        "virtual_pipeline_parallel": cfg.virtual_pipeline_parallel,
        "world_size": dist.get_world_size(),
        "has_optimizer": strategy.optimizer is not None,
    }


def _model_file(directory: Path) -> Path:
    pp = parallel_state.get_pipeline_model_parallel_rank()
    tp = parallel_state.get_tensor_model_parallel_rank()
    return directory / f"model_pp{pp:03d}_tp{tp:03d}.pt"


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "tracker": tensor_parallel.get_cuda_rng_tracker().get_states()}
    if get_device_type() == "cuda":
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


def _mark_unpadded(state: dict) -> dict:
    """Flag every entry of Megatron's bucket-space optimizer state as a real parameter (not padding).

    `load_parameter_state_from_dp_reshardable` skips entries flagged as padding, a flag that only
    megatron's dist-checkpointing wrapper adds; entries from `get_parameter_state_dp_reshardable`
    are all real parameters.
    """
    for key, per_dtype in state.items():
        if isinstance(key, int):
            for buckets in per_dtype.values():
                for bucket in buckets:
                    for entry in bucket:
                        entry["padding"] = False
    return state


def _unshare_adam_steps(optimizer: torch.optim.Optimizer) -> None:
    """Give every parameter its own Adam `step` tensor.

    With torch's Adam (no Apex/TE), megatron's DistributedOptimizer.load_state_dict puts one shared
    `step` tensor into every parameter's state; torch then increments it once per parameter per
    step, which corrupts the bias correction of all later updates.
    """
    for state in optimizer.state.values():
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].clone()


def save(strategy: "MegatronTrainStrategy", directory: Path, step: int, extra: dict) -> None:
    """Write the strategy's state into `directory` (collective over the role's ranks)."""
    if dist.get_rank() == 0:
        directory.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    shard: dict[str, Any] = {"model": [module.state_dict() for module in strategy.modules()]}
    if strategy.optimizer is not None:
        shard["optimizer"] = strategy.optimizer.state_dict()
    if parallel_state.get_data_parallel_rank() == 0:
        torch.save(shard, _model_file(directory))
    rank_state: dict[str, Any] = {"rng": _rng_state()}
    if strategy.optimizer is not None:
        rank_state["optimizer_shards"] = [
            _mark_unpadded(optimizer.get_parameter_state_dp_reshardable())
            for optimizer in strategy.optimizer.chained_optimizers
        ]
    torch.save(rank_state, directory / f"rank{dist.get_rank():05d}.pt")
    if dist.get_rank() == 0:
        common = {"step": step, "extra": extra, "layout": _layout(strategy)}
        if strategy.scheduler is not None:
            common["scheduler"] = strategy.scheduler.state_dict()
        torch.save(common, directory / "common.pt")
    dist.barrier()


@torch.no_grad()
def load(strategy: "MegatronTrainStrategy", directory: Path) -> tuple[int, dict]:
    """Restore what `save` wrote; returns (step, extra). The layout must match the saved one."""
    common_file = directory / "common.pt"
    if not common_file.is_file():
        raise FileNotFoundError(
            f"{common_file} does not exist; {directory} is not a roll Megatron checkpoint"
        )
    # Our own files: `extra` may hold arbitrary picklable caller state.
    common = torch.load(common_file, weights_only=False)
    expected = _layout(strategy)
    saved = {key: common["layout"].get(key) for key in expected}
    if saved != expected:
        raise ValueError(
            f"checkpoint {directory} was saved with layout {saved} but this role has {expected}; resume with the "
            "same parallel sizes, or export it to HF and load that"
        )
    shard = torch.load(_model_file(directory), weights_only=False)
    rank_state = torch.load(directory / f"rank{dist.get_rank():05d}.pt", weights_only=False)
    for module, state in zip(strategy.modules(), shard["model"]):
        module.load_state_dict(state)
    if strategy.optimizer is not None:
        strategy.optimizer.load_state_dict(shard["optimizer"])
        for optimizer, state in zip(strategy.optimizer.chained_optimizers, rank_state["optimizer_shards"]):
            _unshare_adam_steps(optimizer.optimizer)
            optimizer.load_parameter_state_from_dp_reshardable(state)
        # The scheduler adds the saved step count to its own, which starts at 1 (see build_optimizer).
        strategy.scheduler.num_steps = 0
        strategy.scheduler.load_state_dict(common["scheduler"])
    _set_rng_state(rank_state["rng"])
    return common["step"], common["extra"]
