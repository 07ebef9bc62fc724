"""Group-normalised outcome advantages (GRPO, RLOO, REINFORCE++-baseline) broadcast onto the response mask.

`group_advantage` runs the Triton kernel in `group_advantage_triton.py` on CUDA tensors and the
plain-torch reference `group_advantage_torch` otherwise. Per sample i in group g (the samples
sharing a `group_index` value, any ints in any order), with n, mean and unbiased std over g:

- grpo: (s_i - mean) / (std + eps), or s_i - mean with norm_by_std=False (Dr.GRPO);
- rloo: s_i minus the mean of the other samples of g = n / (n - 1) * (s_i - mean);
- reinforce_plus_plus_baseline: s_i - mean (the caller then whitens over the batch's tokens).

Singleton groups and groups of equal scores give exactly 0. Output is (B, T) float32 = advantage_i * response_mask[i].
These match `roll.algorithms.advantages` (which owns the batch whitening of REINFORCE++-baseline).
"""

from __future__ import annotations

from typing import Literal

import torch

GROUP_ESTIMATORS = ("grpo", "rloo", "reinforce_plus_plus_baseline")
Estimator = Literal["grpo", "rloo", "reinforce_plus_plus_baseline"]


def group_advantage_torch(
    scores: torch.Tensor,
    response_mask: torch.Tensor,
    group_index: torch.Tensor,
    estimator: Estimator = "grpo",
    *,
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Plain-torch reference of the kernel: scatter-add count / mean / std per group, then broadcast."""
    scores = scores.float()
    _, inverse = torch.unique(group_index, return_inverse=True)
    num_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    count = torch.zeros(num_groups, device=scores.device).index_add_(0, inverse, torch.ones_like(scores))
    # Shift by the group min before summing so a group of equal scores centres to exactly 0:
    # unshifted, 7 x 0.7 has a mean 1 ulp off, which / (0 + eps) becomes an advantage of 0.056.
    shift = torch.zeros_like(count).scatter_reduce_(0, inverse, scores, "amin", include_self=False)[inverse]
    shifted = scores - shift
    mean = (torch.zeros_like(count).index_add_(0, inverse, shifted) / count)[inverse]
    n = count[inverse]
    centered = shifted - mean
    if estimator == "grpo" and norm_by_std:
        var = torch.zeros_like(count).index_add_(0, inverse, centered**2)[inverse] / (n - 1).clamp(min=1)
        advantage = centered / (var.sqrt() + eps)
    elif estimator == "rloo":
        advantage = torch.where(n > 1, centered * n / (n - 1).clamp(min=1), torch.zeros_like(centered))
    else:
        advantage = centered
    return advantage[:, None] * response_mask.float()


def _validate(scores, response_mask, group_index, estimator, eps) -> None:
    if estimator not in GROUP_ESTIMATORS:
        raise ValueError(f"estimator must be one of {GROUP_ESTIMATORS}, got {estimator!r}")
    if response_mask.dim() != 2 or scores.shape != (response_mask.shape[0],):
        raise ValueError(
            f"scores must be (B,) and response_mask (B, T); got {tuple(scores.shape)} and "
            f"{tuple(response_mask.shape)}"
        )
    if group_index.shape != scores.shape or group_index.is_floating_point():
        raise ValueError(
            f"group_index must be (B,) integer ids like scores {tuple(scores.shape)}, got "
            f"{tuple(group_index.shape)} {group_index.dtype}"
        )
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")


def group_advantage(
    scores: torch.Tensor,
    response_mask: torch.Tensor,
    group_index: torch.Tensor,
    estimator: Estimator = "grpo",
    *,
    norm_by_std: bool = True,
    eps: float = 1e-6,
    backend: Literal["auto", "torch", "triton"] = "auto",
) -> torch.Tensor:
    """(B, T) float32 advantages of `estimator` from scores (B,), response_mask (B, T), group_index (B,).

    `norm_by_std` applies to grpo only. `backend` "auto" picks Triton on CUDA and torch otherwise;
    "triton" on CPU tensors needs TRITON_INTERPRET=1.
    """
    _validate(scores, response_mask, group_index, estimator, eps)
    if backend not in ("auto", "torch", "triton"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'triton', got {backend!r}")
    if scores.numel() == 0:
        return torch.zeros(response_mask.shape, dtype=torch.float32, device=response_mask.device)
    if backend == "triton" or (backend == "auto" and scores.is_cuda):
        from roll.kernels.group_advantage_triton import group_advantage_triton

        return group_advantage_triton(
            scores, response_mask, group_index, estimator, norm_by_std=norm_by_std, eps=eps
        )
    return group_advantage_torch(
        scores, response_mask, group_index, estimator, norm_by_std=norm_by_std, eps=eps
    )
