"""Triton kernel behind `roll.kernels.group_advantage`: segmented count / mean / std + broadcast, one launch.

Samples are sorted by group once in torch (`order`, `offsets`); program (i, j) reads sample i's
group segment, reduces it in registers (two passes: mean, then squared deviations, both shifted
by the group's first score so identical scores give exactly 0), and writes columns
[j*BLOCK_T, (j+1)*BLOCK_T) of row i as advantage_i * response_mask[i]. Re-reducing a group per
column block costs a few dozen loads; it buys a grid over all (B, T) tiles with no atomics.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Lanes per pass over a group; larger groups loop.
_MAX_BLOCK_G = 256
_MODES = {"grpo": 0, "grpo_no_std": 1, "reinforce_plus_plus_baseline": 1, "rloo": 2}


@triton.jit
def _group_advantage_kernel(
    scores_ptr,
    order_ptr,
    offsets_ptr,
    inverse_ptr,
    mask_ptr,
    out_ptr,
    width,
    mask_row_stride,
    out_row_stride,
    eps,
    MODE: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    group = tl.load(inverse_ptr + row)
    start = tl.load(offsets_ptr + group)
    end = tl.load(offsets_ptr + group + 1)
    n = (end - start).to(tl.float32)
    shift = tl.load(scores_ptr + tl.load(order_ptr + start))
    lanes = tl.arange(0, BLOCK_G)
    total = tl.zeros((BLOCK_G,), tl.float32)
    for k in range(start, end, BLOCK_G):
        inside = k + lanes < end
        member = tl.load(order_ptr + k + lanes, mask=inside, other=0)
        total += tl.where(inside, tl.load(scores_ptr + member, mask=inside, other=0.0) - shift, 0.0)
    mean = tl.sum(total, axis=0) / n
    squares = tl.zeros((BLOCK_G,), tl.float32)
    for k in range(start, end, BLOCK_G):
        inside = k + lanes < end
        member = tl.load(order_ptr + k + lanes, mask=inside, other=0)
        dev = tl.load(scores_ptr + member, mask=inside, other=0.0) - shift - mean
        squares += tl.where(inside, dev * dev, 0.0)
    centered = tl.load(scores_ptr + row) - shift - mean
    if MODE == 0:
        std = tl.sqrt(tl.sum(squares, axis=0) / tl.maximum(n - 1.0, 1.0))
        advantage = centered / (std + eps)
    elif MODE == 2:
        advantage = tl.where(n > 1.0, centered * n / tl.maximum(n - 1.0, 1.0), 0.0)
    else:
        advantage = centered
    cols = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    inside_t = cols < width
    response = tl.load(mask_ptr + row * mask_row_stride + cols, mask=inside_t, other=0.0)
    tl.store(out_ptr + row * out_row_stride + cols, advantage * response, mask=inside_t)


def group_advantage_triton(
    scores: torch.Tensor,
    response_mask: torch.Tensor,
    group_index: torch.Tensor,
    estimator: str,
    *,
    norm_by_std: bool = True,
    eps: float = 1e-6,
    max_block_t: int = 1024,
) -> torch.Tensor:
    """Triton twin of `group_advantage_torch` (same arguments; inputs validated by the caller)."""
    mode = _MODES["grpo_no_std" if estimator == "grpo" and not norm_by_std else estimator]
    scores = scores.float().contiguous()
    mask = response_mask.float()
    mask = mask if mask.stride(-1) == 1 else mask.contiguous()
    _, inverse = torch.unique(group_index, return_inverse=True)
    counts = torch.bincount(inverse)
    offsets = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=scores.device)
    torch.cumsum(counts, 0, out=offsets[1:])
    order = torch.argsort(inverse, stable=True)
    batch, width = mask.shape
    out = torch.empty((batch, width), dtype=torch.float32, device=scores.device)
    if width == 0:
        return out
    block_g = min(triton.next_power_of_2(int(counts.max())), _MAX_BLOCK_G)
    block_t = min(triton.next_power_of_2(width), max_block_t)
    _group_advantage_kernel[(batch, triton.cdiv(width, block_t))](
        scores,
        order,
        offsets,
        inverse.contiguous(),
        mask,
        out,
        width,
        mask.stride(0),
        out.stride(0),
        eps,
        MODE=mode,
        BLOCK_G=block_g,
        BLOCK_T=block_t,
    )
    return out
