"""Step-level advantages for multi-turn agentic RL: GiGPO (Feng et al. 2025, "Group-in-Group Policy
Optimization for LLM Agent Training").

A row of the batch is one trajectory of several turns. `response_mask` (B, T) is 1 on the tokens the
policy generated and 0 on the prompt, on the env/tool tokens between turns and on padding;
`turn_index` (B, T) gives the 0-based turn k of each policy token. Per turn, `step_rewards` (B, K) is
the env reward and `step_state_ids` (B, K) an integer id of the state the turn's action was taken
from, -1 past the row's last turn.

GiGPO adds two group-relative advantages on each policy token of turn k of row b:

- episode level, A^E_b: GRPO over the trajectory scores of the rows sharing `group_index` (the same
  initial state / seed);
- step level, A^S_{b,k}: GRPO over the discounted returns R_{b,k} = sum_{j>=k} gamma^(j-k) r_{b,j}
  of all turns, of any row of the group, taken from the same state ("anchor state" groups);

advantage = A^E_b + step_weight * A^S_{b,k}. Both use (x - mean) / (std + eps) with the unbiased std
(or x - mean with norm_by_std=False), and singleton groups give 0, as in roll.kernels.group_advantage.

Trajectory-level StarPO (RAGEN) needs nothing new: it is
`roll.algorithms.advantages.compute_grpo_outcome_advantage` on the multi-turn response mask.
"""

import torch

# From the kernel module rather than roll.algorithms.advantages, which will import this module.
from roll.kernels.group_advantage import group_advantage


@torch.no_grad()
def compute_gigpo_advantage(
    scores: torch.Tensor,
    response_mask: torch.Tensor,
    group_index: torch.Tensor,
    turn_index: torch.Tensor,
    step_rewards: torch.Tensor,
    step_state_ids: torch.Tensor,
    *,
    gamma: float = 1.0,
    step_weight: float = 1.0,
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GiGPO (advantages, returns), both (B, T) float32 and 0 outside `response_mask` (module docstring).

    scores (B,): trajectory returns; response_mask (B, T); group_index (B,) ints; turn_index (B, T)
    ints, the turn of each policy token (ignored elsewhere); step_rewards (B, K); step_state_ids
    (B, K) ints, -1 past a row's last turn. Returns equal the advantages, as for GRPO.
    """
    _validate(scores, response_mask, group_index, turn_index, step_rewards, step_state_ids, gamma)
    if norm_by_std and not eps > 0:
        # Most anchor groups are singletons (std 0); 0 / (0 + eps) is 0 only for eps > 0.
        raise ValueError(f"GiGPO: eps must be > 0 with norm_by_std=True, got {eps}")
    mask = response_mask.float()
    rows = torch.ones(scores.shape[0], 1, device=mask.device)
    episode = group_advantage(scores, rows, group_index, "grpo", norm_by_std=norm_by_std, eps=eps)[:, 0]
    step = _anchor_state_advantage(
        group_index, step_rewards.float(), step_state_ids, gamma, norm_by_std=norm_by_std, eps=eps
    )
    if step.shape[1] == 0:  # no turns, hence (validated) no policy tokens
        return torch.zeros_like(mask), torch.zeros_like(mask)
    # Off-mask turn ids are arbitrary (usually -1): clamp them to a valid column, the mask zeroes them.
    token_step = step.gather(1, turn_index.long().clamp(min=0, max=step.shape[1] - 1))
    advantages = (episode[:, None] + step_weight * token_step) * mask
    return advantages, advantages


def _anchor_state_advantage(
    group_index: torch.Tensor,
    step_rewards: torch.Tensor,
    step_state_ids: torch.Tensor,
    gamma: float,
    *,
    norm_by_std: bool,
    eps: float,
) -> torch.Tensor:
    """(B, K) step-level advantage A^S: GRPO of the discounted returns over (group, state) groups."""
    valid = step_state_ids != -1
    rewards = torch.where(valid, step_rewards, torch.zeros_like(step_rewards))
    # Backward recursion over turns (K is small), vectorised over rows; padded turns add 0.
    returns = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], device=rewards.device)
    for k in reversed(range(rewards.shape[1])):
        running = rewards[:, k] + gamma * running
        returns[:, k] = running
    advantage = torch.zeros_like(rewards)
    if not bool(valid.any()):
        return advantage
    groups = group_index.long()[:, None].expand_as(step_state_ids)
    anchors = torch.stack([groups[valid], step_state_ids.long()[valid]], dim=1)
    _, anchor_index = torch.unique(anchors, dim=0, return_inverse=True)
    picked = returns[valid]
    ones = torch.ones(picked.shape[0], 1, device=picked.device)
    anchored = group_advantage(picked, ones, anchor_index, "grpo", norm_by_std=norm_by_std, eps=eps)
    advantage[valid] = anchored[:, 0]
    return advantage


def _validate(
    scores: torch.Tensor,
    response_mask: torch.Tensor,
    group_index: torch.Tensor,
    turn_index: torch.Tensor,
    step_rewards: torch.Tensor,
    step_state_ids: torch.Tensor,
    gamma: float,
) -> None:
    shapes = (
        f"scores {tuple(scores.shape)}, response_mask {tuple(response_mask.shape)}, group_index "
        f"{tuple(group_index.shape)}, turn_index {tuple(turn_index.shape)}, step_rewards "
        f"{tuple(step_rewards.shape)}, step_state_ids {tuple(step_state_ids.shape)}"
    )
    if response_mask.dim() != 2 or step_rewards.dim() != 2:
        raise ValueError(f"GiGPO: response_mask must be (B, T) and step_rewards (B, K); got {shapes}")
    batch = response_mask.shape[0]
    if (
        scores.shape != (batch,)
        or group_index.shape != (batch,)
        or turn_index.shape != response_mask.shape
        or step_rewards.shape[0] != batch
        or step_state_ids.shape != step_rewards.shape
    ):
        raise ValueError(
            "GiGPO: expected scores (B,), response_mask (B, T), group_index (B,), turn_index (B, T), "
            f"step_rewards (B, K), step_state_ids (B, K); got {shapes}"
        )
    for name, ids in (
        ("group_index", group_index),
        ("turn_index", turn_index),
        ("step_state_ids", step_state_ids),
    ):
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"GiGPO: {name} must hold integer ids, got dtype {ids.dtype}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"GiGPO: gamma must be in [0, 1], got {gamma}")
    valid = step_state_ids != -1
    gaps = valid[:, 1:] & ~valid[:, :-1]
    if bool(gaps.any()):
        b, k = (int(i) for i in torch.nonzero(gaps)[0])
        raise ValueError(
            f"GiGPO: step_state_ids row {b} has -1 (no turn) at turn {k} but a state at turn {k + 1}; "
            "a row's turns must come first and -1 only pad after them"
        )
    positions = torch.nonzero(response_mask > 0)
    turns = turn_index[positions[:, 0], positions[:, 1]]
    outside = (turns < 0) | (turns >= step_rewards.shape[1])
    if bool(outside.any()):
        b, t = (int(i) for i in positions[outside][0])
        raise ValueError(
            f"GiGPO: turn_index[{b}, {t}] = {int(turn_index[b, t])} on a policy token is outside "
            f"[0, K={step_rewards.shape[1]}) of step_rewards {tuple(step_rewards.shape)}"
        )
    no_turn = ~valid[positions[:, 0], turns]
    if bool(no_turn.any()):
        b, t = (int(i) for i in positions[no_turn][0])
        raise ValueError(
            f"GiGPO: policy token [{b}, {t}] is in turn {int(turn_index[b, t])}, whose step_state_ids "
            "is -1 (no such turn); give every turn that has policy tokens a state id"
        )
