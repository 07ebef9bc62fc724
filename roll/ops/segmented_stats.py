"""Segmented group statistics: count, mean and std of values per group id (e.g. the responses to
one prompt in GRPO). GPU tensors use the CUDA kernel in `roll._C_cuda` (csrc/cuda/group_stats.cu);
otherwise, or without the extension, `group_stats_reference` computes them with scatter-adds.
"""

from typing import Optional

import torch

from roll.ops._extension import cuda_extension, log_fallback


def group_stats_reference(
    values: torch.Tensor, group_index: torch.Tensor, num_groups: int, unbiased: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two-pass (mean, then squared deviations) in float64; see `group_stats` for the outputs."""
    x = values.to(torch.float64)
    count = torch.zeros(num_groups, dtype=torch.int64, device=x.device).index_add_(
        0, group_index, torch.ones_like(group_index)
    )
    total = torch.zeros(num_groups, dtype=torch.float64, device=x.device).index_add_(0, group_index, x)
    mean = total / count.clamp(min=1)
    squares = torch.zeros_like(total).index_add_(0, group_index, (x - mean[group_index]) ** 2)
    dof = count - 1 if unbiased else count
    std = torch.where(dof > 0, (squares / dof.clamp(min=1)).sqrt(), torch.zeros_like(squares))
    return count, mean.to(torch.float32), std.to(torch.float32)


def group_stats(
    values: torch.Tensor, group_index: torch.Tensor, num_groups: Optional[int] = None, unbiased: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per group g in [0, num_groups): count (G,) int64, mean (G,) float32, std (G,) float32.

    `values` (N,) float, `group_index` (N,) int64 ids in [0, num_groups) (default: max id + 1).
    std is unbiased (n - 1) by default; a group with too few items to define it (n <= 1 unbiased,
    n = 0 biased) gets std 0, and an empty group mean 0.
    """
    if values.dim() != 1 or group_index.shape != values.shape:
        raise ValueError(
            f"group_stats: values {tuple(values.shape)} and group_index {tuple(group_index.shape)} "
            "must both be (N,)"
        )
    if group_index.dtype != torch.int64:
        raise ValueError(f"group_stats: group_index must be int64, got {group_index.dtype}")
    if num_groups is None:
        num_groups = int(group_index.max()) + 1 if group_index.numel() else 0
    if group_index.numel() and (int(group_index.min()) < 0 or int(group_index.max()) >= num_groups):
        raise ValueError(
            f"group_stats: group ids span [{int(group_index.min())}, {int(group_index.max())}] but "
            f"num_groups is {num_groups}; ids must lie in [0, num_groups)"
        )
    values = values.detach().to(torch.float32).contiguous()
    group_index = group_index.contiguous()
    if values.is_cuda:
        extension = cuda_extension()
        if extension is not None:
            return tuple(extension.group_stats(values, group_index, num_groups, unbiased))
        log_fallback("group_stats", "roll._C_cuda")
    return group_stats_reference(values, group_index, num_groups, unbiased)
