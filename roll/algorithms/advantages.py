"""Advantage estimators: GAE, GRPO, RLOO, REINFORCE++ and REINFORCE++-baseline, plus token rewards.

All per-token tensors are (B, T) with a `response_mask` (B, T) that is 1 on policy tokens; whether T
is the full sequence or only the response does not matter. Outputs are 0 outside the mask. Positions
outside the mask (prompt, env/tool tokens between turns, padding) are skipped by the backward
recursions, which carry their state across them, so a multi-turn trajectory is treated as one
sequence of actions. Sequence-level inputs are `scores` (B,) and `group_index` (B,) ints.
"""

from dataclasses import dataclass
from typing import Optional

import torch

from roll.algorithms.agentic_advantages import compute_gigpo_advantage
from roll.algorithms.losses import kl_penalty
from roll.algorithms.stats import masked_mean, whiten
from roll.config.algorithm import AlgorithmConfig
from roll.kernels.group_advantage import group_advantage
from roll.ops import gae


def compute_token_level_rewards(
    scores: torch.Tensor,
    response_mask: torch.Tensor,
    kl: Optional[torch.Tensor] = None,
    kl_coef: float = 0.0,
) -> torch.Tensor:
    """(B, T) rewards: each score on its row's last response token, minus kl_coef * kl on every
    response token (the PPO KL-in-reward penalty). Rows with an empty mask get no reward."""
    mask = response_mask.float()
    _check_per_sample(scores, mask)
    rewards = torch.zeros_like(mask) if kl is None else -kl_coef * _check_like(kl, mask, "kl").float() * mask
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask > 0, positions, -1).max(dim=1).values
    rows = torch.nonzero(last >= 0).reshape(-1)
    rewards[rows, last[rows]] += scores.float()[rows]
    return rewards


@torch.no_grad()
def compute_gae_advantage_return(
    rewards: torch.Tensor, values: torch.Tensor, response_mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation; returns (advantages, returns), both (B, T).

    Over the response tokens t_1 < t_2 < ... of a row (masked positions skipped):
    delta_k = r_{t_k} + gamma * V_{t_{k+1}} - V_{t_k} (V after the last token is 0),
    A_k = delta_k + gamma * lam * A_{k+1}, and returns = A + V.
    """
    mask = response_mask.float()
    rewards = _check_like(rewards, mask, "rewards").float()
    values = _check_like(values, mask, "values").float()
    # The scan runs in roll.ops (C++ on CPU, CUDA on GPU, torch loop as fallback).
    return gae(rewards, values, mask, gamma, lam)


@torch.no_grad()
def compute_discounted_returns(
    rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float
) -> torch.Tensor:
    """(B, T) reward-to-go G_k = r_{t_k} + gamma * G_{k+1} over each row's response tokens."""
    mask = response_mask.float()
    rewards = _check_like(rewards, mask, "rewards").float()
    active, rewards_t = (mask > 0).t().contiguous(), rewards.t().contiguous()
    running = torch.zeros(mask.shape[0], device=mask.device)
    returns_t = torch.zeros_like(rewards_t)
    for t in reversed(_active_columns(mask)):
        running = torch.where(active[t], rewards_t[t] + gamma * running, running)
        returns_t[t] = running
    return returns_t.t() * mask


@torch.no_grad()
def compute_reinforce_plus_plus_advantage(
    token_level_rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++: discounted returns, whitened over the batch's response tokens as advantages."""
    returns = compute_discounted_returns(token_level_rewards, response_mask, gamma)
    return whiten(returns, response_mask.float()), returns


@torch.no_grad()
def compute_grpo_outcome_advantage(
    scores: torch.Tensor,
    response_mask: torch.Tensor,
    group_index: torch.Tensor,
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO: (score - group mean) / (group std + eps) on every response token; (advantages, returns).

    norm_by_std=False gives Dr.GRPO (no std division). Singleton groups give 0.
    """
    mask = response_mask.float()
    _check_per_sample(scores, mask)
    advantages = group_advantage(scores, mask, group_index, "grpo", norm_by_std=norm_by_std, eps=eps)
    return advantages, advantages


@torch.no_grad()
def compute_rloo_outcome_advantage(
    scores: torch.Tensor, response_mask: torch.Tensor, group_index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """RLOO: score minus the mean score of the other samples of its group; singleton groups give 0."""
    mask = response_mask.float()
    _check_per_sample(scores, mask)
    advantages = group_advantage(scores, mask, group_index, "rloo")
    return advantages, advantages


@torch.no_grad()
def compute_reinforce_plus_plus_baseline_advantage(
    scores: torch.Tensor, response_mask: torch.Tensor, group_index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++-baseline: score minus its group mean on every response token, whitened over the batch."""
    mask = response_mask.float()
    _check_per_sample(scores, mask)
    advantages = whiten(group_advantage(scores, mask, group_index, "reinforce_plus_plus_baseline"), mask)
    return advantages, advantages


@dataclass
class AdvantageResult:
    """What `compute_advantages` adds to a batch."""

    advantages: torch.Tensor
    """(B, T) float32, 0 outside the response mask."""
    returns: torch.Tensor
    """(B, T) float32 return targets (critic targets for GAE)."""
    token_level_rewards: torch.Tensor
    """(B, T) float32: score on the last response token, minus the KL penalty when it is in the reward."""
    reward_kl: Optional[torch.Tensor]
    """Scalar: batch mean of each row's token-mean KL(policy || ref), when KL is in the reward."""


@torch.no_grad()
def compute_advantages(
    cfg: AlgorithmConfig,
    *,
    scores: torch.Tensor,
    response_mask: torch.Tensor,
    group_index: Optional[torch.Tensor] = None,
    values: Optional[torch.Tensor] = None,
    old_log_probs: Optional[torch.Tensor] = None,
    ref_log_probs: Optional[torch.Tensor] = None,
    kl_coef: Optional[float] = None,
    turn_index: Optional[torch.Tensor] = None,
    step_rewards: Optional[torch.Tensor] = None,
    step_state_ids: Optional[torch.Tensor] = None,
) -> AdvantageResult:
    """Run the configured estimator with reward clip/whitening, KL-in-reward and advantage whitening/clip.

    `kl_coef` overrides cfg.kl_coef (pass the KL controller's current value). The KL penalty goes
    into the token rewards when cfg.use_kl_loss is false and the coefficient is > 0; only the
    token-reward estimators (gae, reinforce_plus_plus) can use it. GiGPO also needs the turn
    structure of multi-turn trajectories: `turn_index` (B, T), `step_rewards` and `step_state_ids`
    (B, K) (see roll.algorithms.agentic_advantages).
    """
    estimator = cfg.advantage_estimator
    mask = response_mask.float()
    scores = scores.float()
    if cfg.reward_clip is not None:
        scores = scores.clamp(-cfg.reward_clip, cfg.reward_clip)
    if cfg.whiten_rewards:
        scores = whiten(scores, torch.ones_like(scores))
    coef = cfg.kl_coef if kl_coef is None else kl_coef
    kl = reward_kl = None
    if not cfg.use_kl_loss and coef > 0:
        if estimator not in ("gae", "reinforce_plus_plus"):
            raise ValueError(
                f"algorithm.use_kl_loss=false puts KL into token rewards, which "
                f"advantage_estimator={estimator!r} ignores; use gae|reinforce_plus_plus or use_kl_loss=true"
            )
        if old_log_probs is None or ref_log_probs is None:
            raise ValueError("compute_advantages: KL in reward needs old_log_probs and ref_log_probs")
        kl = kl_penalty(old_log_probs, ref_log_probs, cfg.kl_estimator)
        reward_kl = masked_mean(kl, mask, dim=-1).mean()
    token_rewards = compute_token_level_rewards(scores, mask, kl, coef)

    if estimator == "gae":
        if values is None:
            raise ValueError("compute_advantages: advantage_estimator='gae' needs critic values")
        advantages, returns = compute_gae_advantage_return(token_rewards, values, mask, cfg.gamma, cfg.lam)
    elif estimator == "gigpo":
        if group_index is None or turn_index is None or step_rewards is None or step_state_ids is None:
            raise ValueError(
                "compute_advantages: advantage_estimator='gigpo' needs group_index, turn_index, step_rewards "
                "and step_state_ids (multi-turn episodes from pipeline=agentic)"
            )
        advantages, returns = compute_gigpo_advantage(
            scores,
            mask,
            group_index,
            turn_index,
            step_rewards,
            step_state_ids,
            gamma=cfg.gamma,
            step_weight=cfg.gigpo_step_weight,
            norm_by_std=cfg.norm_adv_by_std,
        )
    elif estimator == "reinforce_plus_plus":
        advantages, returns = compute_reinforce_plus_plus_advantage(token_rewards, mask, cfg.gamma)
    else:
        if group_index is None:
            raise ValueError(f"compute_advantages: advantage_estimator={estimator!r} needs group_index")
        if estimator == "grpo":
            advantages, returns = compute_grpo_outcome_advantage(
                scores, mask, group_index, cfg.norm_adv_by_std
            )
        elif estimator == "rloo":
            advantages, returns = compute_rloo_outcome_advantage(scores, mask, group_index)
        else:
            advantages, returns = compute_reinforce_plus_plus_baseline_advantage(scores, mask, group_index)

    if cfg.whiten_advantages:
        advantages = whiten(advantages, mask)
    if cfg.advantage_clip is not None:
        advantages = advantages.clamp(-cfg.advantage_clip, cfg.advantage_clip)
    return AdvantageResult(advantages, returns, token_rewards, reward_kl)


def _active_columns(mask: torch.Tensor) -> range:
    """Columns from the first to the last that hold any response token (others only carry state)."""
    columns = torch.nonzero(mask.any(dim=0)).reshape(-1)
    return range(0) if columns.numel() == 0 else range(int(columns[0]), int(columns[-1]) + 1)


def _check_like(tensor: torch.Tensor, mask: torch.Tensor, name: str) -> torch.Tensor:
    if tensor.shape != mask.shape:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)} but response_mask has {tuple(mask.shape)}")
    return tensor


def _check_per_sample(scores: torch.Tensor, mask: torch.Tensor) -> None:
    if mask.dim() != 2 or scores.shape != (mask.shape[0],):
        raise ValueError(
            f"scores must be (B,) and response_mask (B, T); got {tuple(scores.shape)} and {tuple(mask.shape)}"
        )
