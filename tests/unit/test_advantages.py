"""Advantage estimators vs plain-Python loop references, on random masks (holes, empty rows) and groups."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from roll.algorithms.advantages import (
    compute_advantages,
    compute_gae_advantage_return,
    compute_grpo_outcome_advantage,
    compute_reinforce_plus_plus_advantage,
    compute_reinforce_plus_plus_baseline_advantage,
    compute_rloo_outcome_advantage,
    compute_token_level_rewards,
)
from roll.algorithms.stats import whiten
from roll.config.algorithm import AlgorithmConfig

B, T = 7, 12


def random_response_mask(rows: int, cols: int, seed: int) -> torch.Tensor:
    """Prompt prefix of zeros, response tokens with holes (env turns), one all-zero row, some padding."""
    gen = torch.Generator().manual_seed(seed)
    mask = (torch.rand(rows, cols, generator=gen) > 0.3).float()
    mask[:, :2] = 0
    mask[0] = 0
    mask[1, -3:] = 0
    return mask


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def to_lists(*tensors: torch.Tensor) -> list:
    return [t.tolist() for t in tensors]


def loop_response_positions(mask_row: list[float]) -> list[int]:
    return [t for t, m in enumerate(mask_row) if m > 0]


def loop_gae(rewards, values, mask, gamma, lam):
    rewards, values, mask = to_lists(rewards, values, mask)
    advantages = [[0.0] * len(row) for row in mask]
    returns = [[0.0] * len(row) for row in mask]
    for b in range(len(mask)):
        next_value, running = 0.0, 0.0
        for t in reversed(loop_response_positions(mask[b])):
            delta = rewards[b][t] + gamma * next_value - values[b][t]
            running = delta + gamma * lam * running
            advantages[b][t] = running
            returns[b][t] = running + values[b][t]
            next_value = values[b][t]
    return torch.tensor(advantages), torch.tensor(returns)


def loop_whiten(values: list[list[float]], mask: list[list[float]]) -> torch.Tensor:
    picked = [values[b][t] for b in range(len(mask)) for t in range(len(mask[b])) if mask[b][t] > 0]
    mean = sum(picked) / len(picked)
    var = sum((x - mean) ** 2 for x in picked) / (len(picked) - 1)
    out = [[0.0] * len(row) for row in mask]
    for b in range(len(mask)):
        for t in range(len(mask[b])):
            if mask[b][t] > 0:
                out[b][t] = (values[b][t] - mean) / math.sqrt(var + 1e-8)
    return torch.tensor(out)


def loop_group_members(groups: list[int], b: int) -> list[int]:
    return [j for j in range(len(groups)) if groups[j] == groups[b]]


def broadcast(per_row: list[float], mask: list[list[float]]) -> torch.Tensor:
    return torch.tensor([[per_row[b] * m for m in mask[b]] for b in range(len(mask))])


def test_gae_hand_computed_three_tokens():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    advantages, returns = compute_gae_advantage_return(rewards, values, torch.ones(1, 3), gamma=0.9, lam=0.8)
    # delta2 = 1 - 0.7; delta1 = 0.9*0.7 - 0.6; delta0 = 0.9*0.6 - 0.5; A_t = delta_t + 0.72 * A_{t+1}
    assert advantages[0].tolist() == pytest.approx([0.21712, 0.246, 0.3], abs=1e-6)
    assert returns[0].tolist() == pytest.approx([0.71712, 0.846, 1.0], abs=1e-6)


def test_gae_skips_env_tokens_between_turns():
    rewards = torch.tensor([[0.0, 9.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 5.0, 0.6, 0.7]])
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    advantages, returns = compute_gae_advantage_return(rewards, values, mask, gamma=0.9, lam=0.8)
    # The env token at t=1 is invisible: same numbers as the contiguous 3-token case, 0 at t=1.
    assert advantages[0].tolist() == pytest.approx([0.21712, 0.0, 0.246, 0.3], abs=1e-6)
    assert returns[0].tolist() == pytest.approx([0.71712, 0.0, 0.846, 1.0], abs=1e-6)


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.99, 0.95), (0.5, 0.0), (0.0, 0.7)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_matches_loop(gamma, lam, seed):
    mask = random_response_mask(B, T, seed)
    rewards, values = randn(B, T, seed=seed + 10), randn(B, T, seed=seed + 20)
    advantages, returns = compute_gae_advantage_return(rewards, values, mask, gamma, lam)
    ref_advantages, ref_returns = loop_gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(advantages, ref_advantages, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(returns, ref_returns, atol=1e-5, rtol=1e-5)


def test_token_level_rewards_matches_loop():
    mask = random_response_mask(B, T, 3)
    scores, kl = randn(B, seed=4), randn(B, T, seed=5)
    rewards = compute_token_level_rewards(scores, mask, kl, kl_coef=0.1)
    m, s, k = to_lists(mask, scores, kl)
    ref = [[-0.1 * k[b][t] * m[b][t] for t in range(T)] for b in range(B)]
    for b in range(B):
        positions = loop_response_positions(m[b])
        if positions:
            ref[b][positions[-1]] += s[b]
    torch.testing.assert_close(rewards, torch.tensor(ref))
    assert rewards[0].abs().sum() == 0  # empty row: no reward at all
    assert compute_token_level_rewards(scores, mask).sum().item() == pytest.approx(sum(s[1:]), abs=1e-5)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reinforce_plus_plus_matches_loop(gamma):
    mask = random_response_mask(B, T, 6)
    rewards = compute_token_level_rewards(randn(B, seed=7), mask, randn(B, T, seed=8), kl_coef=0.05)
    advantages, returns = compute_reinforce_plus_plus_advantage(rewards, mask, gamma)
    r, m = to_lists(rewards, mask)
    ref_returns = [[0.0] * T for _ in range(B)]
    for b in range(B):
        running = 0.0
        for t in reversed(loop_response_positions(m[b])):
            running = r[b][t] + gamma * running
            ref_returns[b][t] = running
    torch.testing.assert_close(returns, torch.tensor(ref_returns), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(advantages, loop_whiten(ref_returns, m), atol=1e-4, rtol=1e-4)


group_layouts = st.lists(st.integers(0, 4), min_size=2, max_size=10)


@settings(max_examples=60, deadline=None)
@given(groups=group_layouts, seed=st.integers(0, 10_000), norm_by_std=st.booleans())
def test_grpo_matches_loop(groups, seed, norm_by_std):
    size = len(groups)
    mask = random_response_mask(size, 6, seed)
    scores = randn(size, seed=seed).round(decimals=1)  # ties make zero-std groups likely
    advantages, returns = compute_grpo_outcome_advantage(
        scores, mask, torch.tensor(groups) * 7 - 3, norm_by_std=norm_by_std
    )
    s = scores.tolist()
    ref = []
    for b in range(size):
        members = [s[j] for j in loop_group_members(groups, b)]
        if len(members) == 1:
            ref.append(0.0)
            continue
        mean = sum(members) / len(members)
        std = math.sqrt(sum((x - mean) ** 2 for x in members) / (len(members) - 1))
        ref.append((s[b] - mean) / (std + 1e-6) if norm_by_std else s[b] - mean)
    expected = broadcast(ref, mask.tolist())
    torch.testing.assert_close(advantages, expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(advantages, returns)


def test_grpo_hand_computed_and_singleton():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0])
    advantages, _ = compute_grpo_outcome_advantage(scores, torch.ones(5, 2), torch.tensor([0, 0, 1, 1, 2]))
    # Each pair has mean 0.5 and unbiased std sqrt(0.5); the singleton group gives 0.
    expected = 0.5 / (math.sqrt(0.5) + 1e-6)
    assert advantages[:, 0].tolist() == pytest.approx([expected, -expected, -expected, expected, 0.0])


@settings(max_examples=60, deadline=None)
@given(groups=group_layouts, seed=st.integers(0, 10_000))
def test_rloo_matches_loop(groups, seed):
    size = len(groups)
    mask = random_response_mask(size, 6, seed)
    scores = randn(size, seed=seed)
    advantages, _ = compute_rloo_outcome_advantage(scores, mask, torch.tensor(groups))
    s = scores.tolist()
    ref = []
    for b in range(size):
        others = [s[j] for j in loop_group_members(groups, b) if j != b]
        ref.append(s[b] - sum(others) / len(others) if others else 0.0)
    torch.testing.assert_close(advantages, broadcast(ref, mask.tolist()), atol=1e-5, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(groups=st.lists(st.integers(0, 3), min_size=4, max_size=10), seed=st.integers(0, 10_000))
def test_reinforce_plus_plus_baseline_matches_loop(groups, seed):
    size = len(groups)
    mask = random_response_mask(size, 6, seed)
    mask[-1, -1] = mask[-2, -1] = 1.0  # at least two tokens to whiten over
    scores = randn(size, seed=seed)
    advantages, _ = compute_reinforce_plus_plus_baseline_advantage(scores, mask, torch.tensor(groups))
    s = scores.tolist()
    centred = []
    for b in range(size):
        members = [s[j] for j in loop_group_members(groups, b)]
        centred.append(s[b] - sum(members) / len(members))
    m = mask.tolist()
    ref = loop_whiten(broadcast(centred, m).tolist(), m)
    torch.testing.assert_close(advantages, ref, atol=1e-4, rtol=1e-4)


def test_whiten_scale_only_and_masked_positions():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert whiten(values, mask).tolist()[0] == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-6)
    assert whiten(values, mask, shift_mean=False).tolist()[0] == pytest.approx([1.0, 2.0, 3.0, 0.0], abs=1e-6)


def test_shape_errors_name_the_tensors():
    with pytest.raises(ValueError, match=r"values has shape \(2, 3\) but response_mask has \(2, 4\)"):
        compute_gae_advantage_return(torch.zeros(2, 4), torch.zeros(2, 3), torch.ones(2, 4), 1.0, 1.0)
    with pytest.raises(ValueError, match="scores must be"):
        compute_grpo_outcome_advantage(torch.zeros(3), torch.ones(2, 4), torch.zeros(3, dtype=torch.long))


def test_compute_advantages_gae_with_kl_in_reward_matches_loop():
    cfg = AlgorithmConfig(
        advantage_estimator="gae", gamma=0.9, lam=0.95, use_kl_loss=False, kl_coef=0.3, kl_estimator="kl"
    )
    mask = random_response_mask(B, T, 11)
    scores, values = randn(B, seed=12), randn(B, T, seed=13)
    old, ref = randn(B, T, seed=14), randn(B, T, seed=15)
    result = compute_advantages(
        cfg,
        scores=scores,
        response_mask=mask,
        values=values,
        old_log_probs=old,
        ref_log_probs=ref,
        kl_coef=0.1,
    )
    m, s, o, r = to_lists(mask, scores, old, ref)
    rewards = [[-0.1 * (o[b][t] - r[b][t]) * m[b][t] for t in range(T)] for b in range(B)]
    row_kls = []
    for b in range(B):
        positions = loop_response_positions(m[b])
        if positions:
            rewards[b][positions[-1]] += s[b]
        row_kls.append(sum(o[b][t] - r[b][t] for t in positions) / max(len(positions), 1))
    ref_advantages, ref_returns = loop_gae(torch.tensor(rewards), values, mask, 0.9, 0.95)
    torch.testing.assert_close(result.token_level_rewards, torch.tensor(rewards), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(result.advantages, ref_advantages, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.returns, ref_returns, atol=1e-5, rtol=1e-5)
    assert result.reward_kl.item() == pytest.approx(sum(row_kls) / B, rel=1e-5)


def test_compute_advantages_grpo_with_clips_and_whitening_matches_loop():
    cfg = AlgorithmConfig(
        advantage_estimator="rloo", reward_clip=1.0, whiten_advantages=True, advantage_clip=1.5
    )
    mask = random_response_mask(B, T, 16)
    scores = randn(B, seed=17) * 2
    groups = [0, 0, 1, 1, 1, 2, 3]
    result = compute_advantages(cfg, scores=scores, response_mask=mask, group_index=torch.tensor(groups))
    s = [min(max(x, -1.0), 1.0) for x in scores.tolist()]
    rloo = []
    for b in range(B):
        others = [s[j] for j in loop_group_members(groups, b) if j != b]
        rloo.append(s[b] - sum(others) / len(others) if others else 0.0)
    m = mask.tolist()
    expected = loop_whiten(broadcast(rloo, m).tolist(), m).clamp(-1.5, 1.5)
    torch.testing.assert_close(result.advantages, expected, atol=1e-4, rtol=1e-4)
    assert result.reward_kl is None


def test_compute_advantages_rejects_inconsistent_inputs():
    mask, scores = torch.ones(2, 3), torch.ones(2)
    with pytest.raises(ValueError, match="advantage_estimator='grpo' ignores"):
        compute_advantages(AlgorithmConfig(use_kl_loss=False, kl_coef=0.1), scores=scores, response_mask=mask)
    with pytest.raises(ValueError, match="needs critic values"):
        compute_advantages(AlgorithmConfig(advantage_estimator="gae"), scores=scores, response_mask=mask)
    with pytest.raises(ValueError, match="needs group_index"):
        compute_advantages(AlgorithmConfig(), scores=scores, response_mask=mask)
