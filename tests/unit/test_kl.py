"""KL estimators vs closed forms, entropy from logits, and the fixed/adaptive KL controllers."""

import math

import pytest
import torch

from roll.algorithms.kl_control import AdaptiveKLController, FixedKLController, make_kl_controller
from roll.algorithms.losses import entropy_from_logits, kl_penalty
from roll.config.algorithm import AlgorithmConfig


def two_categoricals(seed: int, vocab: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    # Scaled so that no token's k3 value reaches the clamp at 10, which would bias the expectation.
    gen = torch.Generator().manual_seed(seed)
    policy = torch.log_softmax(0.7 * torch.randn(vocab, generator=gen, dtype=torch.float64), dim=-1)
    ref = torch.log_softmax(0.7 * torch.randn(vocab, generator=gen, dtype=torch.float64), dim=-1)
    return policy, ref


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k1_and_k3_are_unbiased_for_kl_and_k2_matches_its_closed_form(seed):
    policy, ref = two_categoricals(seed)
    probs = policy.exp()
    closed_kl = sum(p * (lp - lr) for p, lp, lr in zip(probs.tolist(), policy.tolist(), ref.tolist()))
    closed_k2 = sum(
        0.5 * p * (lp - lr) ** 2 for p, lp, lr in zip(probs.tolist(), policy.tolist(), ref.tolist())
    )
    # Exact expectations over tokens sampled from the policy, each token weighted by its probability.
    for estimator, expected in (("kl", closed_kl), ("low_var_kl", closed_kl), ("mse", closed_k2)):
        per_token = kl_penalty(policy[None, :], ref[None, :], estimator)[0].double()
        assert per_token.max() < 10
        assert (probs * per_token).sum().item() == pytest.approx(expected, rel=1e-5), estimator
    torch.testing.assert_close(
        (probs * kl_penalty(policy[None], ref[None], "kl")[0].double()).sum(),
        torch.distributions.kl_divergence(
            torch.distributions.Categorical(logits=policy), torch.distributions.Categorical(logits=ref)
        ),
        rtol=1e-5,
        atol=1e-7,
    )


def test_estimator_values_by_hand_and_clamping():
    log_probs = torch.tensor([[-1.0, -2.0, -40.0, -0.1]])
    ref = torch.tensor([[-1.5, -1.0, -0.1, -40.0]])
    d = [0.5, -1.0]  # log_probs - ref on the first two tokens
    assert kl_penalty(log_probs, ref, "kl")[0, :2].tolist() == pytest.approx(d)
    assert kl_penalty(log_probs, ref, "mse")[0, :2].tolist() == pytest.approx([0.125, 0.5])
    k3 = kl_penalty(log_probs, ref, "low_var_kl")[0].tolist()
    assert k3[:2] == pytest.approx([math.exp(-x) + x - 1 for x in d], rel=1e-6)
    # |log-ratio| = 39.9 would give k3 ~ 2e17 or ~39: the log-ratio is clamped to 20 and k3 to 10.
    assert k3[2] == 10.0 and k3[3] == 10.0
    with pytest.raises(ValueError, match="kl_estimator='k3' is not one of kl|mse|low_var_kl"):
        kl_penalty(log_probs, ref, "k3")


def test_entropy_from_logits_matches_categorical():
    logits = torch.randn(3, 4, 17, generator=torch.Generator().manual_seed(0)) * 3
    expected = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(entropy_from_logits(logits), expected, atol=1e-5, rtol=1e-5)
    uniform = entropy_from_logits(torch.zeros(1, 8))
    assert uniform.item() == pytest.approx(math.log(8))


def test_fixed_controller_never_moves():
    controller = FixedKLController(0.05)
    controller.update(current_kl=10.0, n_steps=1000)
    assert controller.value == 0.05


def test_adaptive_controller_update_formula():
    controller = AdaptiveKLController(init_kl_coef=0.1, target_kl=0.01, horizon=100)
    expected = 0.1
    steps = [(0.02, 10, 0.2), (0.011, 10, 0.1), (0.0, 50, -0.2), (0.009, 4, -0.1), (0.01, 30, 0.0)]
    for current_kl, n_steps, clipped_error in steps:
        controller.update(current_kl, n_steps)
        expected *= 1 + clipped_error * n_steps / 100
        assert controller.value == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(0.1 * 1.02 * 1.01 * 0.9 * 0.996)


def test_make_kl_controller_follows_config():
    adaptive = make_kl_controller(
        AlgorithmConfig(kl_coef=0.2, adaptive_kl=True, kl_target=0.05, kl_horizon=500)
    )
    assert isinstance(adaptive, AdaptiveKLController) and adaptive.value == 0.2 and adaptive.horizon == 500
    assert isinstance(make_kl_controller(AlgorithmConfig(kl_coef=0.2)), FixedKLController)
    with pytest.raises(ValueError, match="kl_target > 0"):
        AdaptiveKLController(0.1, target_kl=0.0, horizon=10)
