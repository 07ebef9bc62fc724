"""Per-token log p(label) and entropy from logits, without a (N, V) fp32 softmax.

`logprobs_from_logits` is the one entry point. The work is split into two per-shard pieces, each
with a plain-torch reference here and a Triton kernel in `logprobs_triton.py`:

- stats: for each row of x = logits / T over this rank's vocab shard, the max m, the sum
  s = sum exp(x - m), w = sum exp(x - m) * (x - m) and the target logit x[label] (0 when the label
  lies outside the shard). Shards (vocab chunks, or TP ranks) combine exactly by rescaling to a
  common max, so lse = m + log s and entropy = log s - w / s.
- grad: d/dx of (g_lp * log p(label) + g_H * H) is g_lp * (1[j=label] - p_j) - g_H * p_j * (log p_j + H),
  recomputed from the saved lse and H chunk by chunk; each TP rank computes its shard's grad locally.

With a TP group the logits are this rank's contiguous vocab shard (rank r holds vocab ids
[r*V/tp, (r+1)*V/tp)), labels are global ids, and the outputs are identical on every rank.
Logits must be finite: mask entries with a large negative value (e.g. -1e9), not -inf, which
would turn 0 * -inf into nan in the entropy terms (as it does in the naive formula).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist

IGNORE_INDEX = -100
# Elements of one fp32 working tile of the torch path (16 MiB): large enough that each op's
# intra-op thread fork/join is amortised (small tiles spin-wait badly on a busy CPU), small
# enough that the two scratch tiles stay far below a (N, V) softmax.
_TILE_ELEMENTS = 1 << 22
_VOCAB_CHUNK = 1 << 15

Backend = Literal["auto", "torch", "triton"]


def merge_stats(
    m_a: torch.Tensor,
    s_a: torch.Tensor,
    w_a: torch.Tensor,
    m_b: torch.Tensor,
    s_b: torch.Tensor,
    w_b: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Combine (max, sum-exp, shifted-sum) statistics of two disjoint vocab parts of the same rows."""
    m = torch.maximum(m_a, m_b)
    scale_a, scale_b = torch.exp(m_a - m), torch.exp(m_b - m)
    s = s_a * scale_a + s_b * scale_b
    # w is relative to its own max: sum e^(x-m_a)(x-m) = sum e^(x-m_a)((x-m_a) + (m_a-m)).
    w = (w_a + (m_a - m) * s_a) * scale_a + (w_b + (m_b - m) * s_b) * scale_b
    return m, s, w


def _tile_buffers(rows: int, cols: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Two fp32 scratch tiles reused across the loop: no fresh allocation (and page faults) per tile.
    first = torch.empty(rows * cols, dtype=torch.float32, device=device)
    return first, torch.empty_like(first)


def shard_stats_torch(
    logits: torch.Tensor, local_labels: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference for the stats kernel. logits (N, V) any float dtype, local_labels (N,) int64 with
    -1 where the label is ignored or outside this shard. Returns fp32 (N,) m, s, w, target logit."""
    n, v = logits.shape
    m = torch.empty(n, dtype=torch.float32, device=logits.device)
    s, w, tgt = torch.empty_like(m), torch.empty_like(m), torch.zeros_like(m)
    vchunk = min(v, _VOCAB_CHUNK)
    rows = max(1, _TILE_ELEMENTS // vchunk)
    shifted_buf, exp_buf = _tile_buffers(rows, vchunk, logits.device)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        acc: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        for c0 in range(0, v, vchunk):
            tile = logits[r0:r1, c0 : c0 + vchunk]
            shifted = shifted_buf[: tile.numel()].view(tile.shape)
            exp = exp_buf[: tile.numel()].view(tile.shape)
            mc = tile.amax(dim=-1).float()
            torch.sub(tile, mc.unsqueeze(-1), out=shifted)  # fp32 out: exact for bf16 inputs
            if temperature != 1.0:
                shifted.div_(temperature)
                mc.div_(temperature)
            torch.exp(shifted, out=exp)
            sc = exp.sum(dim=-1)
            wc = shifted.mul_(exp).sum(dim=-1)  # a batched dot (bmm) is ~10x slower on CPU
            acc = (mc, sc, wc) if acc is None else merge_stats(*acc, mc, sc, wc)
        assert acc is not None, "the vocab loop runs at least once (V >= 1)"
        m[r0:r1], s[r0:r1], w[r0:r1] = acc
    valid = local_labels >= 0
    rows_idx = valid.nonzero().squeeze(-1)
    tgt[rows_idx] = logits[rows_idx, local_labels[rows_idx]].float() / temperature
    return m, s, w, tgt


def shard_grad_torch(
    logits: torch.Tensor,
    local_labels: torch.Tensor,
    lse: torch.Tensor,
    entropy: torch.Tensor,
    grad_logp: torch.Tensor,
    grad_entropy: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Reference for the grad kernel: d(loss)/d(logits) of this shard, in the logits' dtype.
    grad_logp must already be 0 on rows whose label is ignored."""
    n, v = logits.shape
    grad = torch.empty_like(logits)
    rows = max(1, _TILE_ELEMENTS // v)
    logp_buf, prob_buf = _tile_buffers(rows, v, logits.device)
    # grad = p * (a * log p + b) with the per-row a = -g_H / T and b = -(g_lp + g_H * H) / T.
    coef_a = -grad_entropy / temperature
    coef_b = -(grad_logp + grad_entropy * entropy) / temperature
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        tile = logits[r0:r1]
        logp = logp_buf[: tile.numel()].view(tile.shape)
        prob = prob_buf[: tile.numel()].view(tile.shape)
        torch.sub(tile, (lse[r0:r1] * temperature).unsqueeze(-1), out=logp)
        if temperature != 1.0:
            logp.div_(temperature)
        torch.exp(logp, out=prob)
        logp.mul_(coef_a[r0:r1].unsqueeze(-1)).add_(coef_b[r0:r1].unsqueeze(-1))
        torch.mul(prob, logp, out=grad[r0:r1])
    # Label entries recomputed whole in fp32 so bf16 grads are rounded once, not twice.
    hit = (local_labels >= 0).nonzero().squeeze(-1)
    logp_label = logits[hit, local_labels[hit]].float() / temperature - lse[hit]
    label_grad = (
        torch.exp(logp_label) * (coef_a[hit] * logp_label + coef_b[hit]) + grad_logp[hit] / temperature
    )
    grad[hit, local_labels[hit]] = label_grad.to(grad.dtype)
    return grad


def _triton_module():
    # Imported on first use so the CPU path never needs Triton.
    from roll.kernels import logprobs_triton

    return logprobs_triton


def _combine_over_tp(
    m: torch.Tensor, s: torch.Tensor, w: torch.Tensor, tgt: torch.Tensor, tp_group
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    global_m = m.clone()
    dist.all_reduce(global_m, op=dist.ReduceOp.MAX, group=tp_group)
    scale = torch.exp(m - global_m)
    packed = torch.stack([s * scale, (w + (m - global_m) * s) * scale, tgt])
    dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=tp_group)
    return global_m, packed[0], packed[1], packed[2]


class _LogProbsEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, temperature, tp_group, use_triton):
        vocab_start = 0
        if tp_group is not None:
            vocab_start = dist.get_rank(group=tp_group) * logits.shape[-1]
        local = labels - vocab_start
        in_shard = (labels != IGNORE_INDEX) & (local >= 0) & (local < logits.shape[-1])
        local_labels = torch.where(in_shard, local, -1)
        stats_fn = _triton_module().shard_stats_triton if use_triton else shard_stats_torch
        m, s, w, tgt = stats_fn(logits, local_labels, temperature)
        if tp_group is not None:
            m, s, w, tgt = _combine_over_tp(m, s, w, tgt, tp_group)
        log_s = torch.log(s)
        lse = m + log_s
        entropy = log_s - w / s
        valid = labels != IGNORE_INDEX
        log_probs = torch.where(valid, tgt - lse, 0.0)
        ctx.save_for_backward(logits, local_labels, valid, lse, entropy)
        ctx.temperature, ctx.use_triton = temperature, use_triton
        return log_probs, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        logits, local_labels, valid, lse, entropy = ctx.saved_tensors
        grad_logp = torch.where(valid, grad_logp.float(), 0.0).contiguous()
        grad_fn = _triton_module().shard_grad_triton if ctx.use_triton else shard_grad_torch
        grad = grad_fn(
            logits, local_labels, lse, entropy, grad_logp, grad_entropy.float().contiguous(), ctx.temperature
        )
        return grad, None, None, None, None


def _validate(logits: torch.Tensor, labels: torch.Tensor, temperature: float, vocab_size: int) -> None:
    if not logits.is_floating_point() or logits.dim() < 1:
        raise ValueError(
            f"logits must be a float tensor (..., V), got dtype {logits.dtype} shape {tuple(logits.shape)}"
        )
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels shape {tuple(labels.shape)} must equal logits shape without the vocab dim "
            f"{tuple(logits.shape[:-1])}; pass one label per logits row"
        )
    if labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"labels must be int64/int32 token ids, got {labels.dtype}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    bad = ((labels < 0) & (labels != IGNORE_INDEX)) | (labels >= vocab_size)
    if bool(bad.any()):
        value = labels[bad].flatten()[0].item()
        raise ValueError(
            f"labels must be in [0, {vocab_size}) or {IGNORE_INDEX} (ignore), got {value}; "
            f"with a TP group labels are global vocab ids"
        )


def logprobs_from_logits(
    logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    *,
    return_entropy: bool = False,
    tp_group: dist.ProcessGroup | None = None,
    backend: Backend = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """log p(labels) under softmax(logits / temperature), and optionally the entropy of that
    distribution, both fp32 with the shape of `labels`.

    logits: (..., V) bf16/fp16/fp32 (with `tp_group`: this rank's vocab shard (..., V/tp));
    labels: (...) int global vocab ids, -100 = ignore (log-prob 0 and no gradient; the entropy
    of that row is still computed). Differentiable through both outputs. `backend` "auto" runs
    the Triton kernels on CUDA and the chunked torch path otherwise; "triton" on CPU tensors needs
    TRITON_INTERPRET=1.
    """
    if backend not in ("auto", "torch", "triton"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'triton', got {backend!r}")
    tp_size = 1 if tp_group is None else dist.get_world_size(group=tp_group)
    _validate(logits, labels, temperature, logits.shape[-1] * tp_size)
    use_triton = backend == "triton" or (backend == "auto" and logits.is_cuda)
    vocab = logits.shape[-1]
    log_probs, entropy = _LogProbsEntropy.apply(
        logits.reshape(-1, vocab), labels.reshape(-1).long(), float(temperature), tp_group, use_triton
    )
    log_probs = log_probs.view(labels.shape)
    if return_entropy:
        return log_probs, entropy.view(labels.shape)
    return log_probs
