"""Per-token RL losses over (B, T) tensors and their aggregation.

Policy losses: PPO clip with separate low/high ranges (DAPO clip-higher) and dual clip, GSPO
(sequence-level ratio), CISPO (clipped, stop-gradient IS weight times log-prob). Value loss with
clipping. KL estimators k1 "kl", k2 "mse", k3 "low_var_kl". Entropy from logits. `agg_loss` turns a
(B, T) loss matrix and its mask into a scalar; given the `GlobalCounts` of a larger batch it returns
this part's share of that batch's aggregate instead, so that micro-batches on many ranks add up exactly.
Every loss below passes its `global_counts` argument on to `agg_loss`; their clip fractions and
approximate KL are means over the tokens they are given, whatever the counts.
"""

from dataclasses import dataclass
from typing import Optional

import torch

from roll.algorithms.stats import masked_mean

# exp() of a log-ratio beyond these bounds overflows or carries no signal; the same bounds as verl.
_LOG_RATIO_BOUND = 20.0
_GSPO_LOG_RATIO_MAX = 10.0
_LOW_VAR_KL_BOUND = 10.0


@dataclass(frozen=True)
class GlobalCounts:
    """Denominators of a whole batch that is aggregated in parts (micro-batches on data-parallel ranks).

    With them `agg_loss` of one part returns that part's share, and the shares of all parts sum to
    `agg_loss` of the whole batch in one piece.
    """

    tokens: torch.Tensor | float
    """Masked tokens in the whole batch."""
    seqs: torch.Tensor | float
    """Rows of the whole batch with at least one masked token."""
    horizon: torch.Tensor | float
    """seq-mean-token-sum-norm's length constant; agg_loss of the whole (B, T) batch uses T."""


def agg_loss(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    *,
    horizon: Optional[float | torch.Tensor] = None,
    global_counts: Optional[GlobalCounts] = None,
) -> torch.Tensor:
    """Reduce a (B, T) per-token loss over `mask` to a scalar.

    token-mean: sum over all tokens / number of tokens.
    seq-mean-token-sum: per-row token sum, averaged over rows.
    seq-mean-token-mean: per-row token mean, averaged over rows.
    seq-mean-token-sum-norm (Dr.GRPO): total token sum / (number of rows * horizon), where horizon is a
    constant length (default T, or global_counts.horizon), so the loss does not depend on response lengths.
    The seq-mean modes average over rows with at least one token; an empty mask gives 0.
    With `global_counts`, the numbers of tokens and rows are those of the whole batch this (B, T) block
    is a part of: the result is this part's share of the whole batch's aggregate.
    """
    mask = mask.to(loss_mat.dtype)
    row_tokens = mask.sum(-1)
    rows_present = (row_tokens > 0).to(loss_mat.dtype)
    if global_counts is None:
        tokens, rows = row_tokens.sum().clamp(min=1), rows_present.sum().clamp(min=1)
    else:
        tokens, rows = _as_count(global_counts.tokens, loss_mat), _as_count(global_counts.seqs, loss_mat)
        horizon = global_counts.horizon if horizon is None else horizon
    row_sums = (loss_mat * mask).sum(-1)
    # Rows without tokens have a zero sum (and mean), so every numerator can sum over all rows.
    if mode == "token-mean":
        return row_sums.sum() / tokens
    if mode == "seq-mean-token-sum":
        return row_sums.sum() / rows
    if mode == "seq-mean-token-mean":
        return (row_sums / row_tokens.clamp(min=1)).sum() / rows
    if mode == "seq-mean-token-sum-norm":
        return row_sums.sum() / rows / (loss_mat.shape[-1] if horizon is None else horizon)
    raise ValueError(
        f"loss_agg_mode={mode!r} is not one of token-mean|seq-mean-token-sum|seq-mean-token-mean|seq-mean-token-sum-norm"
    )


def _as_count(count: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """A whole-batch count as a 0-dim tensor of `like`'s dtype and device, at least 1 (empty batch -> 0 loss)."""
    return torch.as_tensor(count, dtype=like.dtype, device=like.device).clamp(min=1)


@dataclass
class PolicyLossOutput:
    """Scalar loss and detached scalar metrics of one policy-loss evaluation."""

    loss: torch.Tensor
    """agg_loss of the per-token loss (this part's share of the whole batch's, given global_counts)."""
    clip_fraction: torch.Tensor
    """Share of response tokens whose ratio (or IS weight) was clipped."""
    dual_clip_fraction: torch.Tensor
    """Share of response tokens bounded by the dual clip (negative advantages); 0 when unused."""
    approx_kl: torch.Tensor
    """Token mean of old_log_prob - log_prob, an estimate of KL(old || current)."""


def ppo_policy_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    dual_clip_c: Optional[float] = None,
    loss_agg_mode: str = "token-mean",
    global_counts: Optional[GlobalCounts] = None,
) -> PolicyLossOutput:
    """PPO clipped surrogate max(-A r, -A clip(r, 1 - low, 1 + high)) with r = exp(logp - old_logp).

    With dual_clip_c = c > 1, tokens with A < 0 are further bounded by -A c (Ye et al. 2020).
    """
    log_ratio = (log_probs - old_log_probs).clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_ratio_low, 1 + clip_ratio_high)
    loss_mat = torch.maximum(unclipped, clipped)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    dual_clip_fraction = torch.zeros((), device=loss_mat.device)
    if dual_clip_c is not None:
        bound = -advantages * dual_clip_c
        negative = advantages < 0
        dual_clip_fraction = masked_mean((negative & (loss_mat > bound)).float(), mask)
        loss_mat = torch.where(negative, torch.minimum(loss_mat, bound), loss_mat)
    return PolicyLossOutput(
        loss=agg_loss(loss_mat, mask, loss_agg_mode, global_counts=global_counts),
        clip_fraction=clip_fraction.detach(),
        dual_clip_fraction=dual_clip_fraction.detach(),
        approx_kl=masked_mean(-log_ratio, mask).detach(),
    )


def gspo_policy_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_ratio_low: float = 3e-4,
    clip_ratio_high: float = 4e-4,
    loss_agg_mode: str = "seq-mean-token-mean",
    global_counts: Optional[GlobalCounts] = None,
) -> PolicyLossOutput:
    """GSPO (Zheng et al. 2025): PPO clipping on the sequence ratio s = (prod_t r_t)^(1/|y|).

    Each token uses s_t = sg(s) * pi(y_t) / sg(pi(y_t)), whose value is s and whose gradient is that
    of the sequence objective; with seq-mean-token-mean this is the paper's objective. The paper's
    clip ranges are ~1e-4 wide, hence the defaults.
    """
    log_ratio = log_probs - old_log_probs
    seq_log_ratio = masked_mean(log_ratio, mask, dim=-1)
    token_log_ratio = log_probs - log_probs.detach() + seq_log_ratio.detach()[:, None]
    ratio = torch.exp(token_log_ratio.clamp(max=_GSPO_LOG_RATIO_MAX))
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_ratio_low, 1 + clip_ratio_high)
    loss_mat = torch.maximum(unclipped, clipped)
    return PolicyLossOutput(
        loss=agg_loss(loss_mat, mask, loss_agg_mode, global_counts=global_counts),
        clip_fraction=masked_mean((clipped > unclipped).float(), mask).detach(),
        dual_clip_fraction=torch.zeros((), device=loss_mat.device),
        approx_kl=masked_mean(-log_ratio, mask).detach(),
    )


def cispo_policy_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    loss_agg_mode: str = "token-mean",
    global_counts: Optional[GlobalCounts] = None,
) -> PolicyLossOutput:
    """CISPO (MiniMax-M1): -sg(clip(r, 1 - low, 1 + high)) * A * log_prob per token.

    Clipping the stop-gradient IS weight instead of the ratio keeps a gradient on every token.
    """
    log_ratio = (log_probs - old_log_probs).clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
    ratio = torch.exp(log_ratio).detach()
    weight = ratio.clamp(1 - clip_ratio_low, 1 + clip_ratio_high)
    loss_mat = -advantages * weight * log_probs
    return PolicyLossOutput(
        loss=agg_loss(loss_mat, mask, loss_agg_mode, global_counts=global_counts),
        clip_fraction=masked_mean((weight != ratio).float(), mask).detach(),
        dual_clip_fraction=torch.zeros((), device=loss_mat.device),
        approx_kl=masked_mean(-log_ratio, mask).detach(),
    )


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    value_clip: Optional[float] = None,
    loss_agg_mode: str = "token-mean",
    global_counts: Optional[GlobalCounts] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Critic loss 0.5 * max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2); returns (loss, clip fraction).

    value_clip=None gives the plain 0.5 * (V - R)^2.
    """
    unclipped = (values - returns) ** 2
    if value_clip is None:
        return 0.5 * agg_loss(unclipped, mask, loss_agg_mode, global_counts=global_counts), torch.zeros(
            (), device=values.device
        )
    clipped_values = old_values + (values - old_values).clamp(-value_clip, value_clip)
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * agg_loss(torch.maximum(unclipped, clipped), mask, loss_agg_mode, global_counts=global_counts)
    return loss, masked_mean((clipped > unclipped).float(), mask).detach()


def kl_penalty(log_probs: torch.Tensor, ref_log_probs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(policy || ref) from samples of the policy (Schulman's k1/k2/k3).

    kl (k1): logp - ref_logp. mse (k2): 0.5 * (logp - ref_logp)^2.
    low_var_kl (k3): exp(ref_logp - logp) - (ref_logp - logp) - 1, clamped to [-10, 10].
    """
    log_ratio = log_probs.float() - ref_log_probs.float()
    if estimator == "kl":
        return log_ratio
    if estimator == "mse":
        return 0.5 * log_ratio**2
    if estimator == "low_var_kl":
        ref_log_ratio = (-log_ratio).clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
        kl = torch.exp(ref_log_ratio) - ref_log_ratio - 1
        return kl.clamp(-_LOW_VAR_KL_BOUND, _LOW_VAR_KL_BOUND)
    raise ValueError(f"kl_estimator={estimator!r} is not one of kl|mse|low_var_kl")


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dim: logsumexp(z) - sum(softmax(z) * z)."""
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1) - (torch.softmax(logits, dim=-1) * logits).sum(-1)
