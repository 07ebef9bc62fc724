"""Compiled Triton kernels on a CUDA GPU vs the naive torch references (skipped without CUDA)."""

import pytest
import torch

from roll.kernels.group_advantage import group_advantage, group_advantage_torch
from roll.kernels.logprobs import IGNORE_INDEX, logprobs_from_logits

pytestmark = pytest.mark.gpu


def _naive(logits, labels, temperature):
    logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)
    logp = logp_all.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    logp = torch.where(labels == IGNORE_INDEX, torch.zeros_like(logp), logp)
    return logp, -(logp_all.exp() * logp_all).sum(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("vocab", [1000, 151936])
def test_logprobs_triton_matches_naive_on_cuda(dtype, vocab):
    gen = torch.Generator(device="cuda").manual_seed(0)
    logits = (torch.randn(4, 33, vocab, device="cuda", generator=gen) * 4).to(dtype)
    labels = torch.randint(0, vocab, (4, 33), device="cuda", generator=gen)
    labels[0, :5] = IGNORE_INDEX
    w_lp = torch.randn(4, 33, device="cuda", generator=gen)
    w_h = torch.randn(4, 33, device="cuda", generator=gen)
    results = []
    for fn in (
        lambda x, t: logprobs_from_logits(x, labels, t, return_entropy=True),
        lambda x, t: _naive(x, labels, t),
    ):
        x = logits.clone().requires_grad_(True)
        logp, ent = fn(x, 0.7)
        ((logp * w_lp).sum() + (ent * w_h).sum()).backward()
        results.append((logp.detach(), ent.detach(), x.grad))
    (got_lp, got_h, got_g), (ref_lp, ref_h, ref_g) = results
    torch.testing.assert_close(got_lp, ref_lp, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_h, ref_h, rtol=1e-4, atol=1e-4)
    assert got_g.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got_g.float(), ref_g.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("estimator, norm_by_std", [("grpo", True), ("grpo", False), ("rloo", True)])
def test_group_advantage_triton_matches_torch_reference_on_cuda(estimator, norm_by_std):
    gen = torch.Generator(device="cuda").manual_seed(1)
    group_index = torch.randint(0, 300, (4096,), device="cuda", generator=gen) * 17  # sparse ids
    scores = torch.randn(4096, device="cuda", generator=gen)
    mask = (torch.rand(4096, 1500, device="cuda", generator=gen) > 0.2).float()
    got = group_advantage(scores, mask, group_index, estimator, norm_by_std=norm_by_std)
    ref = group_advantage_torch(
        scores.cpu(), mask.cpu(), group_index.cpu(), estimator, norm_by_std=norm_by_std
    )
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-4, atol=1e-4)
