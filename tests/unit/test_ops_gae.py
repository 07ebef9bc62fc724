"""roll.ops.gae against independent references: GAE over the compressed unmasked tokens written
as a plain Python loop here, a closed form (gamma = lam = 1), the torch reverse loop
`gae_reference`."""

import importlib.util

import pytest
import torch

from roll.ops import gae
from roll.ops.gae_scan import gae_reference

requires_extension = pytest.mark.skipif(
    importlib.util.find_spec("roll._C") is None, reason="roll._C is not built"
)


def _gae_over_unmasked_tokens(rewards, values, mask, gamma, lam):
    """Per row: drop the masked tokens, run textbook GAE on what is left (bootstrap 0 past the
    end) and scatter the results back; masked tokens get 0 advantage and 0 return."""
    advantages = torch.zeros_like(values, dtype=torch.float64)
    returns = torch.zeros_like(values, dtype=torch.float64)
    for row in range(values.shape[0]):
        kept = [t for t in range(values.shape[1]) if mask[row, t] > 0]
        running = 0.0
        for j in reversed(range(len(kept))):
            t = kept[j]
            next_value = float(values[row, kept[j + 1]]) if j + 1 < len(kept) else 0.0
            running = (
                float(rewards[row, t]) + gamma * next_value - float(values[row, t]) + gamma * lam * running
            )
            advantages[row, t] = running
            returns[row, t] = running + float(values[row, t])
    return advantages, returns


def _inputs(batch, length, seed, mask_prob=0.3):
    generator = torch.Generator().manual_seed(seed)
    rewards = torch.randn(batch, length, generator=generator)
    values = torch.randn(batch, length, generator=generator)
    mask = (torch.rand(batch, length, generator=generator) > mask_prob).float()
    mask[0] = 0.0  # a row with no action tokens at all
    return rewards, values, mask


@pytest.mark.parametrize("gamma, lam", [(1.0, 1.0), (0.99, 0.95), (0.9, 0.0)])
def test_matches_gae_over_unmasked_tokens(gamma, lam):
    rewards, values, mask = _inputs(6, 37, seed=0)
    expected_adv, expected_ret = _gae_over_unmasked_tokens(rewards, values, mask, gamma, lam)
    for implementation in (gae, gae_reference):
        advantages, returns = implementation(rewards, values, mask, gamma, lam)
        assert advantages.dtype == torch.float32
        torch.testing.assert_close(advantages.double(), expected_adv, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(returns.double(), expected_ret, atol=1e-4, rtol=1e-4)


def test_undiscounted_closed_form():
    # gamma = lam = 1 without masks: advantage = sum of the rewards from t on - V(t).
    rewards, values, _ = _inputs(3, 20, seed=1)
    advantages, returns = gae(rewards, values, torch.ones_like(values), 1.0, 1.0)
    reward_to_go = rewards.flip(1).cumsum(1).flip(1)
    torch.testing.assert_close(advantages, reward_to_go - values, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(returns, reward_to_go, atol=1e-5, rtol=1e-5)


@requires_extension
def test_cpp_threads_match_torch_loop():
    from roll import _C

    # 7 rows x 30000 tokens run on 3 threads with an uneven last chunk of rows.
    rewards, values, mask = _inputs(7, 30_000, seed=2)
    expected_adv, expected_ret = gae_reference(rewards, values, mask, 0.99, 0.95)
    advantages, returns = _C.gae(rewards.numpy(), values.numpy(), mask.numpy(), 0.99, 0.95, max_threads=3)
    torch.testing.assert_close(torch.from_numpy(advantages), expected_adv, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.from_numpy(returns), expected_ret, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(0, 5), (3, 0)])
def test_empty_inputs(shape):
    empty = torch.zeros(shape)
    for implementation in (gae, gae_reference):
        advantages, returns = implementation(empty, empty, empty, 0.99, 0.95)
        assert advantages.shape == returns.shape == shape


def test_casts_non_contiguous_and_low_precision_inputs():
    rewards, values, mask = _inputs(4, 16, seed=4)
    expected_adv, _ = gae_reference(rewards, values, mask, 0.99, 0.95)
    advantages, _ = gae(rewards.t().contiguous().t(), values, mask.to(torch.bfloat16), 0.99, 0.95)
    torch.testing.assert_close(advantages, expected_adv, atol=1e-5, rtol=1e-5)


def test_bad_arguments_name_the_values():
    rewards, values, mask = _inputs(2, 8, seed=5)
    with pytest.raises(ValueError, match=r"values shape \(2, 7\) != rewards shape \(2, 8\)"):
        gae(rewards, values[:, :7], mask, 0.99, 0.95)
    with pytest.raises(ValueError, match=r"rewards must be \(B, T\), got shape \(8,\)"):
        gae(rewards[0], values[0], mask[0], 0.99, 0.95)
    with pytest.raises(ValueError, match=r"lam must be in \[0, 1\], got 1.5"):
        gae(rewards, values, mask, 0.99, 1.5)
