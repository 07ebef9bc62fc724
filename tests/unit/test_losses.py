"""Policy/value losses and agg_loss vs plain-Python loop references (values and gradients) and hand cases;
agg_loss shares of random micro-batches with GlobalCounts sum to the whole batch's aggregate."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from roll.algorithms.losses import (
    GlobalCounts,
    agg_loss,
    cispo_policy_loss,
    gspo_policy_loss,
    ppo_policy_loss,
    value_loss,
)

B, T = 5, 8
AGG_MODES = ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


def random_response_mask(rows: int, cols: int, seed: int) -> torch.Tensor:
    """Prompt prefix of zeros, response tokens with holes, and one all-zero row."""
    mask = (torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed)) > 0.3).float()
    mask[:, 0] = 0
    mask[0] = 0
    mask[1, 1] = 1
    return mask


def policy_inputs(seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=gen) * 3
    new = (old + 0.4 * torch.randn(B, T, generator=gen)).requires_grad_()
    advantages = torch.randn(B, T, generator=gen)
    return new, old, advantages, random_response_mask(B, T, seed)


def loop_agg(loss_rows: list[list], mask: list[list[float]], mode: str):
    """Aggregate a per-token loss given as nested lists (of floats or 0-dim tensors) with plain loops."""
    rows = []
    all_tokens = []
    for b in range(len(mask)):
        tokens = [loss_rows[b][t] for t in range(len(mask[b])) if mask[b][t] > 0]
        all_tokens += tokens
        if tokens:
            rows.append(tokens)
    if mode == "token-mean":
        return sum(all_tokens) / len(all_tokens)
    if mode == "seq-mean-token-sum":
        return sum(sum(r) for r in rows) / len(rows)
    if mode == "seq-mean-token-mean":
        return sum(sum(r) / len(r) for r in rows) / len(rows)
    return sum(sum(r) for r in rows) / len(rows) / len(mask[0])


def nested(tensor: torch.Tensor) -> list[list[torch.Tensor]]:
    """0-dim views of a (B, T) tensor so that loop references keep autograd."""
    return [[tensor[b, t] for t in range(tensor.shape[1])] for b in range(tensor.shape[0])]


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("seed", [0, 1])
def test_agg_loss_matches_loop(mode, seed):
    loss_mat = torch.randn(B, T, generator=torch.Generator().manual_seed(seed))
    mask = random_response_mask(B, T, seed)
    expected = loop_agg(loss_mat.tolist(), mask.tolist(), mode)
    assert agg_loss(loss_mat, mask, mode).item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_agg_loss_hand_computed_and_errors():
    loss_mat = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert agg_loss(loss_mat, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert agg_loss(loss_mat, mask, "seq-mean-token-sum").item() == pytest.approx((6 + 4) / 2)
    assert agg_loss(loss_mat, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    assert agg_loss(loss_mat, mask, "seq-mean-token-sum-norm").item() == pytest.approx(10 / 2 / 4)
    assert agg_loss(loss_mat, mask, "seq-mean-token-sum-norm", horizon=10).item() == pytest.approx(0.5)
    assert agg_loss(loss_mat, torch.zeros_like(mask), "seq-mean-token-mean").item() == 0.0
    with pytest.raises(ValueError, match="loss_agg_mode='token-sum' is not one of"):
        agg_loss(loss_mat, mask, "token-sum")


def loop_ppo_token_loss(lp, old, a, low, high, dual_c):
    ratio = torch.exp(lp - old)
    clipped_ratio = min(max(ratio, torch.tensor(1 - low)), torch.tensor(1 + high))
    loss = max(-a * ratio, -a * clipped_ratio)
    if dual_c is not None and a < 0:
        loss = min(loss, -a * dual_c)
    return loss


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("low,high,dual_c", [(0.2, 0.2, None), (0.2, 0.28, None), (0.1, 0.3, 3.0)])
def test_ppo_loss_and_gradient_match_loop(mode, low, high, dual_c):
    new, old, advantages, mask = policy_inputs(seed=int(high * 100))
    out = ppo_policy_loss(
        new,
        old,
        advantages,
        mask,
        clip_ratio_low=low,
        clip_ratio_high=high,
        dual_clip_c=dual_c,
        loss_agg_mode=mode,
    )
    (grad,) = torch.autograd.grad(out.loss, new)
    leaf = new.detach().clone().requires_grad_()
    lp, o, a = nested(leaf), old.tolist(), advantages.tolist()
    token_losses = [
        [loop_ppo_token_loss(lp[b][t], o[b][t], a[b][t], low, high, dual_c) for t in range(T)]
        for b in range(B)
    ]
    expected = loop_agg(token_losses, mask.tolist(), mode)
    (expected_grad,) = torch.autograd.grad(expected, leaf)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(grad, expected_grad, atol=1e-6, rtol=1e-5)

    m = mask.tolist()
    tokens = [(b, t) for b in range(B) for t in range(T) if m[b][t] > 0]
    ratios = {(b, t): math.exp(new[b, t].item() - o[b][t]) for b, t in tokens}
    clipped = sum(
        (ratios[k] > 1 + high and a[k[0]][k[1]] > 0) or (ratios[k] < 1 - low and a[k[0]][k[1]] < 0)
        for k in tokens
    )
    assert out.clip_fraction.item() == pytest.approx(clipped / len(tokens))
    approx_kl = sum(o[b][t] - new[b, t].item() for b, t in tokens) / len(tokens)
    assert out.approx_kl.item() == pytest.approx(approx_kl, rel=1e-5, abs=1e-6)


def test_ppo_clip_higher_is_asymmetric():
    old = torch.zeros(1, 4)
    log_ratio = torch.log(torch.tensor([[1.25, 1.25, 0.75, 0.75]]))
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    # A > 0, ratio 1.25: inside the DAPO range (high 0.28) -> -1.25; clipped at 1.2 by the symmetric one.
    dapo = ppo_policy_loss(log_ratio, old, advantages, mask, clip_ratio_low=0.2, clip_ratio_high=0.28)
    symmetric = ppo_policy_loss(log_ratio, old, advantages, mask, clip_ratio_low=0.2, clip_ratio_high=0.2)
    # A < 0, ratio 0.75: clipped up to 0.8 by both (loss max(0.75, 0.8) = 0.8).
    assert dapo.loss.item() == pytest.approx((-1.25 + 0.8) / 2)
    assert symmetric.loss.item() == pytest.approx((-1.2 + 0.8) / 2)
    assert dapo.clip_fraction.item() == pytest.approx(
        0.5
    ) and symmetric.clip_fraction.item() == pytest.approx(1.0)


def test_dual_clip_bounds_negative_advantages():
    log_ratio = torch.log(torch.tensor([[5.0, 5.0, 2.0]]))
    advantages = torch.tensor([[-1.0, 1.0, -1.0]])
    out = ppo_policy_loss(log_ratio, torch.zeros(1, 3), advantages, torch.ones(1, 3), dual_clip_c=3.0)
    # Token 0: max(5, 1.2) = 5 bounded to 3; token 1 (A > 0): max(-5, -1.2) = -1.2; token 2: 2 < 3 stays.
    assert out.loss.item() == pytest.approx((3.0 - 1.2 + 2.0) / 3)
    assert out.dual_clip_fraction.item() == pytest.approx(1 / 3)


@pytest.mark.parametrize("mode", ["seq-mean-token-mean", "token-mean"])
@pytest.mark.parametrize("low,high", [(3e-4, 4e-4), (0.2, 0.3)])
def test_gspo_sequence_ratio_loss_and_gradient(mode, low, high):
    new, old, token_advantages, mask = policy_inputs(seed=7)
    new = (old + 0.1 * (new.detach() - old)).requires_grad_()
    # GSPO's token form equals the sequence objective's gradient when each row has one advantage (GRPO).
    advantages = token_advantages[:, :1].expand(B, T)
    out = gspo_policy_loss(
        new, old, advantages, mask, clip_ratio_low=low, clip_ratio_high=high, loss_agg_mode=mode
    )
    (grad,) = torch.autograd.grad(out.loss, new)

    leaf = new.detach().clone().requires_grad_()
    lp, o, a, m = nested(leaf), old.tolist(), advantages.tolist(), mask.tolist()
    token_losses = [[torch.tensor(0.0)] * T for _ in range(B)]
    for b in range(B):
        positions = [t for t in range(T) if m[b][t] > 0]
        if not positions:
            continue
        # The sequence ratio is the geometric mean of the token ratios over the response.
        product = torch.tensor(1.0)
        for t in positions:
            product = product * torch.exp(lp[b][t] - o[b][t])
        seq_ratio = product ** (1.0 / len(positions))
        clipped_ratio = min(max(seq_ratio, torch.tensor(1 - low)), torch.tensor(1 + high))
        for t in positions:
            token_losses[b][t] = max(-a[b][t] * seq_ratio, -a[b][t] * clipped_ratio)
    expected = loop_agg(token_losses, m, mode)
    (expected_grad,) = torch.autograd.grad(expected, leaf)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(grad, expected_grad, atol=1e-6, rtol=1e-4)


def test_cispo_weight_is_clipped_and_stop_gradient():
    new, old, advantages, mask = policy_inputs(seed=3)
    out = cispo_policy_loss(new, old, advantages, mask, clip_ratio_low=0.1, clip_ratio_high=0.2)
    (grad,) = torch.autograd.grad(out.loss, new)
    m, a, o = mask.tolist(), advantages.tolist(), old.tolist()
    n_tokens = sum(sum(row) for row in m)
    expected_loss, expected_grad, n_clipped = 0.0, [[0.0] * T for _ in range(B)], 0
    for b in range(B):
        for t in range(T):
            if m[b][t] > 0:
                lp = new[b, t].item()
                ratio = math.exp(lp - o[b][t])
                weight = min(max(ratio, 0.9), 1.2)
                n_clipped += weight != ratio
                expected_loss += -a[b][t] * weight * lp / n_tokens
                # d/d logp of -A * sg(w) * logp is -A * w: the weight passes no gradient.
                expected_grad[b][t] = -a[b][t] * weight / n_tokens
    assert out.loss.item() == pytest.approx(expected_loss, rel=1e-5)
    torch.testing.assert_close(grad, torch.tensor(expected_grad), atol=1e-6, rtol=1e-5)
    assert out.clip_fraction.item() == pytest.approx(n_clipped / n_tokens)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), clip=st.sampled_from([None, 0.05, 0.5]), mode=st.sampled_from(AGG_MODES))
def test_value_loss_matches_loop(seed, clip, mode):
    gen = torch.Generator().manual_seed(seed)
    old_values, returns = torch.randn(B, T, generator=gen), torch.randn(B, T, generator=gen)
    values = (old_values + 0.3 * torch.randn(B, T, generator=gen)).requires_grad_()
    mask = random_response_mask(B, T, seed)
    loss, clip_fraction = value_loss(values, old_values, returns, mask, value_clip=clip, loss_agg_mode=mode)
    (grad,) = torch.autograd.grad(loss, values)

    leaf = values.detach().clone().requires_grad_()
    v, ov, r, m = nested(leaf), old_values.tolist(), returns.tolist(), mask.tolist()
    token_losses, n_clipped = [[None] * T for _ in range(B)], 0
    for b in range(B):
        for t in range(T):
            unclipped = (v[b][t] - r[b][t]) ** 2
            if clip is None:
                token_losses[b][t] = unclipped
                continue
            clipped_value = min(max(v[b][t], torch.tensor(ov[b][t] - clip)), torch.tensor(ov[b][t] + clip))
            clipped = (clipped_value - r[b][t]) ** 2
            token_losses[b][t] = max(unclipped, clipped)
            n_clipped += bool(clipped > unclipped) and m[b][t] > 0
    expected = 0.5 * loop_agg(token_losses, m, mode)
    (expected_grad,) = torch.autograd.grad(expected, leaf)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(grad, expected_grad, atol=1e-6, rtol=1e-5)
    assert clip_fraction.item() == pytest.approx(n_clipped / sum(sum(row) for row in m))


def random_parts(rows: int, seed: int) -> list[list[int]]:
    """A random partition of range(rows) into 2..rows non-empty groups of random rows."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(rows, generator=gen).tolist()
    n_parts = int(torch.randint(2, rows + 1, (1,), generator=gen))
    cuts = sorted(torch.randperm(rows - 1, generator=gen)[: n_parts - 1].add(1).tolist())
    return [order[a:b] for a, b in zip([0, *cuts], [*cuts, rows])]


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_agg_loss_shares_of_random_micro_batches_sum_to_the_whole_batch(mode, seed):
    rows = 9
    gen = torch.Generator().manual_seed(100 + seed)
    loss_mat = torch.randn(rows, T, generator=gen).requires_grad_()
    mask = random_response_mask(rows, T, seed)
    # Very different response lengths: row 2 answers with one token.
    mask[2] = 0
    mask[2, 3] = 1
    m = mask.tolist()
    counts = GlobalCounts(
        tokens=sum(sum(row) for row in m), seqs=sum(1 for row in m if sum(row) > 0), horizon=T
    )
    parts = random_parts(rows, seed)
    shares, local_means = [], []
    for part in parts:
        # Like the strategy, each part is cut to its own longest response: the horizon must not follow.
        width = max([t + 1 for b in part for t in range(T) if m[b][t] > 0], default=1)
        part_loss, part_mask = loss_mat[part, :width], mask[part, :width]
        shares.append(agg_loss(part_loss, part_mask, mode, global_counts=counts))
        local_means.append(agg_loss(part_loss, part_mask, mode).item())
    total = torch.stack(shares).sum()
    (grad,) = torch.autograd.grad(total, loss_mat)

    leaf = loss_mat.detach().clone().requires_grad_()
    expected = loop_agg(nested(leaf), m, mode)
    (expected_grad,) = torch.autograd.grad(expected, leaf)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(grad, expected_grad, atol=1e-7, rtol=1e-5)
    # The old objective, the mean of per-part aggregates, is a different number on this split.
    assert abs(sum(local_means) / len(local_means) - expected.item()) > 1e-4


def test_global_counts_reach_the_policy_and_value_losses():
    new, old, advantages, mask = policy_inputs(seed=5)
    counts = GlobalCounts(tokens=mask.sum(), seqs=(mask.sum(-1) > 0).sum(), horizon=T)
    parts = [[0, 3], [1], [2, 4]]
    for loss_fn in (ppo_policy_loss, gspo_policy_loss, cispo_policy_loss):
        whole = loss_fn(new, old, advantages, mask, loss_agg_mode="seq-mean-token-mean").loss
        split = sum(
            loss_fn(
                new[p],
                old[p],
                advantages[p],
                mask[p],
                loss_agg_mode="seq-mean-token-mean",
                global_counts=counts,
            ).loss
            for p in parts
        )
        assert split.item() == pytest.approx(whole.item(), rel=1e-5, abs=1e-7)
    values, returns = new.detach(), advantages
    whole_v, _ = value_loss(values, old, returns, mask, value_clip=0.1, loss_agg_mode="token-mean")
    split_v = sum(
        value_loss(values[p], old[p], returns[p], mask[p], value_clip=0.1, global_counts=counts)[0]
        for p in parts
    )
    assert split_v.item() == pytest.approx(whole_v.item(), rel=1e-5)


def test_agg_loss_global_counts_of_an_empty_batch_give_zero():
    counts = GlobalCounts(tokens=0, seqs=0, horizon=4)
    for mode in AGG_MODES:
        assert agg_loss(torch.ones(2, 4), torch.zeros(2, 4), mode, global_counts=counts).item() == 0.0
