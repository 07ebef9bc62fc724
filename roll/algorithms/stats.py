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
