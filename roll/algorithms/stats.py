"""Masked reductions and whitening over (B, T) tensors, and per-group statistics over (B,) scores."""

from typing import Optional

import torch


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    """Sum of `values` where `mask` is nonzero (over all elements, or along `dim`)."""
    masked = values * mask
    return masked.sum() if dim is None else masked.sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    """Mean of `values` over the mask; 0 where the mask is empty (rather than NaN)."""
    count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of `values` over all masked elements; 0 with fewer than 2 elements."""
    count = mask.sum()
    mean = masked_sum(values, mask) / count.clamp(min=1)
    return masked_sum((values - mean) ** 2, mask) / (count - 1).clamp(min=1)


def whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """(values - mean) / sqrt(var + eps) with mean and unbiased var over the masked elements.

    shift_mean=False adds the mean back (scale only). Positions outside the mask are returned as 0.
    """
    mask = mask.to(values.dtype)
    mean = masked_mean(values, mask)
    whitened = (values - mean) * torch.rsqrt(masked_var(values, mask) + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def group_mean_std(scores: torch.Tensor, group_index: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-sample mean, unbiased std and size of the sample's group; all (B,).

    Groups are the samples sharing a `group_index` value (any ints, any order). A singleton group
    has std 0.
    """
    if scores.dim() != 1 or group_index.shape != scores.shape:
        raise ValueError(
            f"scores {tuple(scores.shape)} and group_index {tuple(group_index.shape)} must both be (B,)"
        )
    _, inverse = torch.unique(group_index, return_inverse=True)
    num_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    count = torch.zeros(num_groups, dtype=scores.dtype, device=scores.device).index_add_(
        0, inverse, torch.ones_like(scores)
    )
    total = torch.zeros_like(count).index_add_(0, inverse, scores)
    mean = (total / count)[inverse]
    squared = torch.zeros_like(count).index_add_(0, inverse, (scores - mean) ** 2)
    std = (squared / (count - 1).clamp(min=1)).sqrt()[inverse]
    return mean, std, count[inverse]
