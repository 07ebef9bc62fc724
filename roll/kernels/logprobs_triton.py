"""Triton kernels behind `roll.kernels.logprobs`: per-row softmax statistics and the logits grad.

Each kernel mirrors its plain-torch reference in `logprobs.py` (`shard_stats_torch`,
`shard_grad_torch`) and is tested against it; on CPU they run under TRITON_INTERPRET=1.
One program owns one row and walks the vocabulary in BLOCK_V chunks with an online max, so the
logits are read once in their own dtype (bf16/fp16/fp32) and only fp32 per-row scalars are written.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Running-max start value: finite so that (m_old - m_new) * s_old is 0, not nan, on the first chunk.
_NEG_BIG = tl.constexpr(-1.0e30)


@triton.jit
def _stats_kernel(
    logits_ptr,
    labels_ptr,
    m_ptr,
    s_ptr,
    w_ptr,
    tgt_ptr,
    vocab,
    row_stride,
    inv_temperature,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * row_stride
    cols = tl.arange(0, BLOCK_V)
    m = tl.full((), _NEG_BIG, tl.float32)
    s = tl.zeros((), tl.float32)
    w = tl.zeros((), tl.float32)
    for start in range(0, vocab, BLOCK_V):
        idx = start + cols
        inside = idx < vocab
        x = tl.load(row_ptr + idx, mask=inside, other=float("-inf")).to(tl.float32) * inv_temperature
        m_new = tl.maximum(m, tl.max(x, axis=0))
        scale = tl.exp(m - m_new)
        e = tl.exp(x - m_new)
        # Masked lanes hold x = -inf (so e = 0); zero their shift to keep 0 * -inf out of the sum.
        d = tl.where(inside, x - m_new, 0.0)
        w = (w + (m - m_new) * s) * scale + tl.sum(e * d, axis=0)
        s = s * scale + tl.sum(e, axis=0)
        m = m_new
    label = tl.load(labels_ptr + row)
    tgt = tl.load(row_ptr + tl.maximum(label, 0), mask=label >= 0, other=0.0).to(tl.float32)
    tl.store(m_ptr + row, m)
    tl.store(s_ptr + row, s)
    tl.store(w_ptr + row, w)
    tl.store(tgt_ptr + row, tl.where(label >= 0, tgt * inv_temperature, 0.0))


@triton.jit
def _grad_kernel(
    logits_ptr,
    grad_ptr,
    labels_ptr,
    lse_ptr,
    entropy_ptr,
    grad_logp_ptr,
    grad_entropy_ptr,
    vocab,
    row_stride,
    grad_row_stride,
    inv_temperature,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    idx = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    inside = idx < vocab
    x = tl.load(logits_ptr + row * row_stride + idx, mask=inside, other=0.0).to(tl.float32)
    lse = tl.load(lse_ptr + row)
    g_lp = tl.load(grad_logp_ptr + row)
    g_h = tl.load(grad_entropy_ptr + row)
    h = tl.load(entropy_ptr + row)
    label = tl.load(labels_ptr + row)
    logp = x * inv_temperature - lse
    p = tl.exp(logp)
    g = -p * (g_lp + g_h * (logp + h))
    g = tl.where(idx == label, g + g_lp, g) * inv_temperature
    tl.store(grad_ptr + row * grad_row_stride + idx, g.to(grad_ptr.dtype.element_ty), mask=inside)


def _rows_contiguous(logits: torch.Tensor) -> torch.Tensor:
    return logits if logits.stride(-1) == 1 else logits.contiguous()


def _default_block(vocab: int, cap: int) -> int:
    return min(triton.next_power_of_2(vocab), cap)


def shard_stats_triton(
    logits: torch.Tensor, local_labels: torch.Tensor, temperature: float, block_v: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton twin of `shard_stats_torch`: fp32 (N,) max, sum-exp, shifted-sum and target logit."""
    logits = _rows_contiguous(logits)
    n, vocab = logits.shape
    m, s, w, tgt = (torch.empty(n, dtype=torch.float32, device=logits.device) for _ in range(4))
    if n == 0:
        return m, s, w, tgt
    block = block_v or _default_block(vocab, 4096)
    _stats_kernel[(n,)](
        logits,
        local_labels.contiguous(),
        m,
        s,
        w,
        tgt,
        vocab,
        logits.stride(0),
        1.0 / temperature,
        BLOCK_V=block,
        num_warps=8 if block >= 2048 else 4,
    )
    return m, s, w, tgt


def shard_grad_triton(
    logits: torch.Tensor,
    local_labels: torch.Tensor,
    lse: torch.Tensor,
    entropy: torch.Tensor,
    grad_logp: torch.Tensor,
    grad_entropy: torch.Tensor,
    temperature: float,
    block_v: int | None = None,
) -> torch.Tensor:
    """Triton twin of `shard_grad_torch`: d(loss)/d(logits) of this shard in the logits' dtype."""
    logits = _rows_contiguous(logits)
    n, vocab = logits.shape
    grad = torch.empty_like(logits)
    if n == 0:
        return grad
    block = block_v or _default_block(vocab, 2048)
    _grad_kernel[(n, triton.cdiv(vocab, block))](
        logits,
        grad,
        local_labels.contiguous(),
        lse.contiguous(),
        entropy.contiguous(),
        grad_logp.contiguous(),
        grad_entropy.contiguous(),
        vocab,
        logits.stride(0),
        grad.stride(0),
        1.0 / temperature,
        BLOCK_V=block,
        num_warps=8 if block >= 2048 else 4,
    )
    return grad
