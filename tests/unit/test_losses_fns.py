"""make_actor_loss_fn / make_critic_loss_fn from an AlgorithmConfig vs per-token loop references; with the
strategy's whole-mini-batch keys, micro-batch losses and gradients add up to the whole batch's."""

import math

import pytest
import torch

from roll.algorithms.loss_fns import (
    GLOBAL_HORIZON,
    GLOBAL_SEQ_COUNT,
    GLOBAL_TOKEN_COUNT,
    LOSS_SCALE,
    make_actor_loss_fn,
    make_critic_loss_fn,
    make_sft_loss_fn,
)
from roll.config.algorithm import AlgorithmConfig

B, S = 4, 7


def micro_batch(seed: int) -> tuple[dict, dict]:
    gen = torch.Generator().manual_seed(seed)
    mask = (torch.rand(B, S, generator=gen) > 0.3).float()
    mask[:, 0] = 0
    mask[0] = 0
    old = -torch.rand(B, S, generator=gen) * 2
    micro = {
        "response_mask": mask,
        "old_log_probs": old,
        "ref_log_probs": old + 0.3 * torch.randn(B, S, generator=gen),
        "advantages": torch.randn(B, S, generator=gen),
        "values": torch.randn(B, S, generator=gen),
        "returns": torch.randn(B, S, generator=gen),
    }
    outputs = {
        "log_probs": (old + 0.2 * torch.randn(B, S, generator=gen)).requires_grad_(),
        "entropy": torch.rand(B, S, generator=gen) * 3,
        "values": (micro["values"] + 0.3 * torch.randn(B, S, generator=gen)).requires_grad_(),
    }
    return outputs, micro


def tokens(mask: torch.Tensor) -> list[tuple[int, int]]:
    return [(b, t) for b in range(B) for t in range(S) if mask[b, t] > 0]


def test_actor_loss_ppo_with_kl_and_entropy_matches_loop():
    cfg = AlgorithmConfig(
        clip_ratio_low=0.2, clip_ratio_high=0.28, kl_coef=0.1, kl_estimator="low_var_kl", entropy_coef=0.01
    )
    outputs, micro = micro_batch(0)
    loss, metrics = make_actor_loss_fn(cfg)(outputs, micro)
    pg, kl, entropy = 0.0, 0.0, 0.0
    positions = tokens(micro["response_mask"])
    for b, t in positions:
        lp, old = outputs["log_probs"][b, t].item(), micro["old_log_probs"][b, t].item()
        a, ref = micro["advantages"][b, t].item(), micro["ref_log_probs"][b, t].item()
        ratio = math.exp(lp - old)
        pg += max(-a * ratio, -a * min(max(ratio, 0.8), 1.28)) / len(positions)
        kl += (math.exp(ref - lp) - (ref - lp) - 1) / len(positions)
        entropy += outputs["entropy"][b, t].item() / len(positions)
    assert loss.item() == pytest.approx(pg + 0.1 * kl - 0.01 * entropy, rel=1e-5)
    assert metrics["pg_loss"].item() == pytest.approx(pg, rel=1e-5)
    assert metrics["kl_loss"].item() == pytest.approx(kl, rel=1e-5)
    assert metrics["entropy"].item() == pytest.approx(entropy, rel=1e-5)
    assert metrics["kl_coef"].item() == pytest.approx(0.1)
    assert {"pg_clipfrac", "ppo_kl"} <= set(metrics) and not any(m.requires_grad for m in metrics.values())
    loss.backward()
    assert outputs["log_probs"].grad[micro["response_mask"] == 0].abs().sum() == 0


def test_actor_loss_kl_coef_getter_and_kl_in_reward_mode():
    outputs, micro = micro_batch(1)
    base_cfg = AlgorithmConfig(kl_coef=0.0)
    base_loss, _ = make_actor_loss_fn(base_cfg)(outputs, micro)
    coef = {"value": 0.5}
    cfg = AlgorithmConfig(kl_coef=0.1, kl_estimator="kl")
    loss, metrics = make_actor_loss_fn(cfg, kl_coef_getter=lambda: coef["value"])(outputs, micro)
    assert loss.item() == pytest.approx(base_loss.item() + 0.5 * metrics["kl_loss"].item(), rel=1e-5)
    # KL in the reward (use_kl_loss=false): the loss has no KL term, the metric still reports it.
    reward_cfg = AlgorithmConfig(kl_coef=0.1, use_kl_loss=False)
    loss, metrics = make_actor_loss_fn(reward_cfg)(outputs, micro)
    assert loss.item() == pytest.approx(base_loss.item(), rel=1e-6) and "kl_loss" in metrics


@pytest.mark.parametrize("policy_loss", ["gspo", "cispo"])
def test_actor_loss_dispatches_policy_variants(policy_loss):
    outputs, micro = micro_batch(2)
    cfg = AlgorithmConfig(policy_loss=policy_loss, loss_agg_mode="seq-mean-token-mean", clip_ratio_high=0.3)
    loss, metrics = make_actor_loss_fn(cfg)(outputs, micro)
    per_row = []
    for b in range(B):
        row = [t for t in range(S) if micro["response_mask"][b, t] > 0]
        if not row:
            continue
        lp = [outputs["log_probs"][b, t].item() for t in row]
        old = [micro["old_log_probs"][b, t].item() for t in row]
        adv = [micro["advantages"][b, t].item() for t in row]
        if policy_loss == "gspo":
            s = math.exp(sum(x - y for x, y in zip(lp, old)) / len(row))
            per_row.append(sum(max(-a * s, -a * min(max(s, 0.8), 1.3)) for a in adv) / len(row))
        else:
            weights = [min(max(math.exp(x - y), 0.8), 1.3) for x, y in zip(lp, old)]
            per_row.append(sum(-a * w * x for a, w, x in zip(adv, weights, lp)) / len(row))
    assert loss.item() == pytest.approx(sum(per_row) / len(per_row), rel=1e-5)
    assert metrics["pg_loss"].item() == pytest.approx(loss.item())


def test_actor_loss_names_missing_fields():
    outputs, micro = micro_batch(3)
    del micro["ref_log_probs"]
    with pytest.raises(KeyError, match=r"micro\['ref_log_probs'\]"):
        make_actor_loss_fn(AlgorithmConfig(kl_coef=0.1))(outputs, micro)
    with pytest.raises(KeyError, match=r"outputs\['entropy'\]"):
        make_actor_loss_fn(AlgorithmConfig(entropy_coef=0.1))({"log_probs": outputs["log_probs"]}, micro)


@pytest.mark.parametrize("value_clip", [None, 0.1])
def test_critic_loss_matches_loop(value_clip):
    outputs, micro = micro_batch(4)
    loss, metrics = make_critic_loss_fn(AlgorithmConfig(value_clip=value_clip))(outputs, micro)
    expected, positions = 0.0, tokens(micro["response_mask"])
    for b, t in positions:
        v, old, ret = (
            outputs["values"][b, t].item(),
            micro["values"][b, t].item(),
            micro["returns"][b, t].item(),
        )
        term = (v - ret) ** 2
        if value_clip is not None:
            term = max(term, (min(max(v, old - value_clip), old + value_clip) - ret) ** 2)
        expected += 0.5 * term / len(positions)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert metrics["vf_loss"].item() == pytest.approx(expected, rel=1e-5)
    assert set(metrics) == {"vf_loss", "vf_clipfrac", "vpred_mean"}


def with_global_keys(micro: dict, rows: list[int], whole_mask: torch.Tensor, scale: float) -> dict:
    """The rows of `micro` plus the whole batch's counts, as the training strategy adds them."""
    part = {name: value[rows] for name, value in micro.items()}
    part[GLOBAL_TOKEN_COUNT] = torch.tensor(float(whole_mask.sum()))
    part[GLOBAL_SEQ_COUNT] = torch.tensor(float((whole_mask.sum(-1) > 0).sum()))
    part[GLOBAL_HORIZON] = torch.tensor(float(whole_mask.shape[1]))
    part[LOSS_SCALE] = torch.tensor(scale)
    return part


@pytest.mark.parametrize(
    "mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
)
@pytest.mark.parametrize("role", ["actor", "critic", "sft"])
def test_loss_fns_with_global_counts_add_up_to_the_whole_batch(mode, role):
    outputs, micro = micro_batch(5)
    # Row 1 keeps a single response token: its micro-batch would be over-weighted by local means.
    micro["response_mask"][1] = 0
    micro["response_mask"][1, 2] = 1
    cfg = AlgorithmConfig(loss_agg_mode=mode, kl_coef=0.1, entropy_coef=0.01, value_clip=0.2)
    loss_fns = {"actor": make_actor_loss_fn, "critic": make_critic_loss_fn}
    loss_fn = loss_fns[role](cfg) if role in loss_fns else make_sft_loss_fn(mode)
    grad_of = "values" if role == "critic" else "log_probs"
    whole_loss, whole_metrics = loss_fn(outputs, micro)
    (whole_grad,) = torch.autograd.grad(whole_loss, outputs[grad_of])

    parts = [[1, 2], [0], [3]]  # row 0 has no response tokens
    scale = len(parts) * 2.0  # micro-batches x a data-parallel size of 2, as the strategy divides
    results = [
        loss_fn(
            {k: v[rows] for k, v in outputs.items()},
            with_global_keys(micro, rows, micro["response_mask"], scale),
        )
        for rows in parts
    ]
    # Megatron divides each micro-batch's loss by the number of micro-batches and DDP by the DP size.
    total = sum(loss for loss, _ in results) / scale
    (grad,) = torch.autograd.grad(total, outputs[grad_of])
    assert total.item() == pytest.approx(whole_loss.item(), rel=1e-5, abs=1e-7)
    torch.testing.assert_close(grad, whole_grad, rtol=1e-5, atol=1e-7)
    # The strategy reports each metric's mean over micro-batches and ranks = sum over them / scale.
    exact = {"pg_loss", "kl_loss", "entropy", "vf_loss", "vpred_mean", "nll"} & set(whole_metrics)
    for name in exact:
        mean = sum(m[name].item() for _, m in results) / scale
        assert mean == pytest.approx(whole_metrics[name].item(), rel=1e-5, abs=1e-7), name
    local = [
        loss_fn({k: v[rows] for k, v in outputs.items()}, {k: v[rows] for k, v in micro.items()})[0]
        for rows in parts
    ]
    assert abs(sum(x.item() for x in local) / len(parts) - whole_loss.item()) > 1e-4
