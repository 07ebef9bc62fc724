"""Actor and critic loss functions built from the AlgorithmConfig, in the strategy's loss-fn contract.

`loss_fn(outputs, micro) -> (loss, metrics)`: `outputs` holds the model's per-token `log_probs` and
`entropy` (actor) or `values` (critic), (b, S) aligned with input_ids; `micro` holds the micro-batch's
tensors from the Batch. The loss is that micro-batch's scalar; metrics are detached scalars.

Exact aggregation over micro-batches and data-parallel ranks: when `micro` carries the whole
mini-batch's counts (GLOBAL_TOKEN_COUNT, GLOBAL_SEQ_COUNT, GLOBAL_HORIZON; the training strategy
adds them) and LOSS_SCALE, every aggregated term is this micro-batch's share of the whole mini-batch's
aggregate (`agg_loss` with `GlobalCounts`) times LOSS_SCALE. The strategy's LOSS_SCALE is what the
gradient is later divided by (number of micro-batches x data-parallel size), so the optimised
objective is the loss aggregated over the whole mini-batch in one piece, and the mean of the loss
(and of pg_loss, kl_loss, entropy, vf_loss, vpred_mean, nll) over micro-batches and ranks is that
whole-mini-batch value. Clip fractions, ppo_kl and ppl_token_mean stay per-micro-batch means.
seq-mean-token-sum-norm's horizon is then the mini-batch's padded width S, equal on every rank,
rather than the width of the (trimmed) micro-batch tensors.
Without the counts, each micro-batch is aggregated on its own (the driver's and the tests' use).
"""

from collections.abc import Callable
from typing import Any, Optional

import torch

from roll.algorithms.losses import (
    GlobalCounts,
    agg_loss,
    cispo_policy_loss,
    gspo_policy_loss,
    kl_penalty,
    ppo_policy_loss,
    value_loss,
)
from roll.config.algorithm import AlgorithmConfig

LossFn = Callable[
    [dict[str, torch.Tensor], dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]
]

GLOBAL_TOKEN_COUNT = "global_token_count"
"""micro key: () response tokens in the whole mini-batch (all micro-batches on all DP ranks)."""
GLOBAL_SEQ_COUNT = "global_seq_count"
"""micro key: () sequences of the whole mini-batch with at least one response token."""
GLOBAL_HORIZON = "global_horizon"
"""micro key: () padded width S of the whole mini-batch (seq-mean-token-sum-norm's horizon)."""
LOSS_SCALE = "loss_scale"
"""micro key: () factor the strategy later divides the gradient by (micro-batches x DP size)."""


def global_aggregation(micro: dict[str, torch.Tensor]) -> tuple[Optional[GlobalCounts], torch.Tensor | float]:
    """(GlobalCounts, loss scale) from the whole-mini-batch keys of `micro`; (None, 1.0) without them."""
    if GLOBAL_TOKEN_COUNT not in micro:
        return None, 1.0
    counts = GlobalCounts(
        tokens=micro[GLOBAL_TOKEN_COUNT], seqs=micro[GLOBAL_SEQ_COUNT], horizon=micro[GLOBAL_HORIZON]
    )
    return counts, _require(micro, LOSS_SCALE, "micro")


def make_actor_loss_fn(cfg: AlgorithmConfig, kl_coef_getter: Optional[Callable[[], float]] = None) -> LossFn:
    """Policy loss (cfg.policy_loss) + KL loss (when cfg.use_kl_loss) - entropy bonus.

    Reads micro["old_log_probs"], micro["advantages"], micro["response_mask"] and, for the KL loss,
    micro["ref_log_probs"]; outputs["log_probs"] and outputs["entropy"] (needed when entropy_coef != 0).
    `kl_coef_getter` returns the current KL coefficient (e.g. an adaptive controller's value);
    default cfg.kl_coef. Metrics: pg_loss, pg_clipfrac, ppo_kl, plus pg_clipfrac_lower (dual clip),
    kl_loss and kl_coef (when ref_log_probs are present) and entropy (when outputs has it).
    """
    get_kl_coef = kl_coef_getter or (lambda: cfg.kl_coef)

    def actor_loss_fn(
        outputs: dict[str, torch.Tensor], micro: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        log_probs = _require(outputs, "log_probs", "outputs").float()
        mask = _require(micro, "response_mask", "micro").float()
        old_log_probs = _require(micro, "old_log_probs", "micro").float()
        advantages = _require(micro, "advantages", "micro").float()
        counts, scale = global_aggregation(micro)
        policy_kwargs: dict[str, Any] = {
            "clip_ratio_low": cfg.clip_ratio_low,
            "clip_ratio_high": cfg.clip_ratio_high,
            "loss_agg_mode": cfg.loss_agg_mode,
            "global_counts": counts,
        }
        if cfg.policy_loss == "ppo":
            policy = ppo_policy_loss(
                log_probs, old_log_probs, advantages, mask, dual_clip_c=cfg.dual_clip_c, **policy_kwargs
            )
        elif cfg.policy_loss == "gspo":
            policy = gspo_policy_loss(log_probs, old_log_probs, advantages, mask, **policy_kwargs)
        else:
            policy = cispo_policy_loss(log_probs, old_log_probs, advantages, mask, **policy_kwargs)
        loss = policy.loss * scale
        metrics = {"pg_loss": loss, "pg_clipfrac": policy.clip_fraction, "ppo_kl": policy.approx_kl}
        if cfg.dual_clip_c is not None:
            metrics["pg_clipfrac_lower"] = policy.dual_clip_fraction

        kl_coef = get_kl_coef()
        kl_needed = cfg.use_kl_loss and kl_coef > 0
        if kl_needed or "ref_log_probs" in micro:
            ref_log_probs = _require(micro, "ref_log_probs", "micro")
            kl_mat = kl_penalty(log_probs, ref_log_probs, cfg.kl_estimator)
            kl_loss = agg_loss(kl_mat, mask, cfg.loss_agg_mode, global_counts=counts) * scale
            if kl_needed:
                loss = loss + kl_coef * kl_loss
            metrics["kl_loss"] = kl_loss
            metrics["kl_coef"] = torch.tensor(float(kl_coef), device=loss.device)
        if cfg.entropy_coef != 0 or "entropy" in outputs:
            entropy_mat = _require(outputs, "entropy", "outputs").float()
            entropy = agg_loss(entropy_mat, mask, cfg.loss_agg_mode, global_counts=counts) * scale
            if cfg.entropy_coef != 0:
                loss = loss - cfg.entropy_coef * entropy
            metrics["entropy"] = entropy
        return loss, {name: value.detach() for name, value in metrics.items()}

    return actor_loss_fn


def make_critic_loss_fn(cfg: AlgorithmConfig) -> LossFn:
    """Clipped value loss (cfg.value_clip) from outputs["values"], micro["values"] (old), micro["returns"].

    Metrics: vf_loss, vf_clipfrac, vpred_mean (token mean of the new values).
    """

    def critic_loss_fn(
        outputs: dict[str, torch.Tensor], micro: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values = _require(outputs, "values", "outputs").float()
        mask = _require(micro, "response_mask", "micro").float()
        old_values = _require(micro, "values", "micro").float()
        returns = _require(micro, "returns", "micro").float()
        counts, scale = global_aggregation(micro)
        loss, clip_fraction = value_loss(
            values,
            old_values,
            returns,
            mask,
            value_clip=cfg.value_clip,
            loss_agg_mode=cfg.loss_agg_mode,
            global_counts=counts,
        )
        loss = loss * scale
        metrics = {
            "vf_loss": loss,
            "vf_clipfrac": clip_fraction,
            "vpred_mean": agg_loss(values, mask, "token-mean", global_counts=counts) * scale,
        }
        return loss, {name: value.detach() for name, value in metrics.items()}

    return critic_loss_fn


def _require(fields: dict[str, torch.Tensor], key: str, where: str) -> torch.Tensor:
    if key not in fields:
        raise KeyError(f"loss fn needs {where}[{key!r}] but it has only {sorted(fields)}")
    return fields[key]


def make_sft_loss_fn(loss_agg_mode: str = "token-mean") -> LossFn:
    """Negative log-likelihood of the target tokens (micro["response_mask"] == 1), aggregated by mode.

    Metrics: nll (the loss) and ppl_token_mean (exp of this micro-batch's token-mean NLL).
    """

    def sft_loss_fn(
        outputs: dict[str, torch.Tensor], micro: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        log_probs = _require(outputs, "log_probs", "outputs").float()
        mask = _require(micro, "response_mask", "micro").float()
        counts, scale = global_aggregation(micro)
        loss = agg_loss(-log_probs, mask, loss_agg_mode, global_counts=counts) * scale
        token_nll = agg_loss(-log_probs, mask, "token-mean").detach()
        return loss, {"nll": loss.detach(), "ppl_token_mean": token_nll.exp()}

    return sft_loss_fn
