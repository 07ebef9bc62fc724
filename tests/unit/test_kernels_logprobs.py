"""Chunked torch path of roll.kernels.logprobs vs a naive full log_softmax reference, forward and backward."""

import pytest
import torch

from roll.kernels import logprobs as lp_mod
from roll.kernels.logprobs import IGNORE_INDEX, logprobs_from_logits


def naive_logprobs_entropy(logits: torch.Tensor, labels: torch.Tensor, temperature: float):
    """Materialises the full fp32 softmax: the textbook formula the kernels must reproduce."""
    logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)
    safe = labels.clamp(min=0)
    logp = logp_all.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    logp = torch.where(labels == IGNORE_INDEX, torch.zeros_like(logp), logp)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def _case(shape, vocab, dtype, seed=0, n_ignore=3):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(*shape, vocab, generator=gen) * 3).to(dtype)
    labels = torch.randint(0, vocab, shape, generator=gen)
    flat = labels.view(-1)
    flat[torch.randperm(flat.numel(), generator=gen)[:n_ignore]] = IGNORE_INDEX
    w_lp = torch.randn(shape, generator=gen)
    w_h = torch.randn(shape, generator=gen)
    return logits, labels, w_lp, w_h


def _grads(fn, logits, labels, temperature, w_lp, w_h):
    x = logits.clone().requires_grad_(True)
    logp, ent = fn(x, labels, temperature)
    ((logp * w_lp).sum() + (ent * w_h).sum()).backward()
    return logp.detach(), ent.detach(), x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("small_tiles", [False, True])
def test_matches_naive_forward_and_backward(dtype, temperature, small_tiles, monkeypatch):
    if small_tiles:  # force several row tiles and vocab chunks with a remainder
        monkeypatch.setattr(lp_mod, "_TILE_ELEMENTS", 64)
        monkeypatch.setattr(lp_mod, "_VOCAB_CHUNK", 24)
    logits, labels, w_lp, w_h = _case((3, 7), 101, dtype)

    def ours(x, lab, t):
        return logprobs_from_logits(x, lab, t, return_entropy=True, backend="torch")

    got = _grads(ours, logits, labels, temperature, w_lp, w_h)
    ref = _grads(naive_logprobs_entropy, logits, labels, temperature, w_lp, w_h)
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.float32
    assert got[2].dtype == dtype
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-5, atol=1e-5)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got[2].float(), ref[2].float(), rtol=tol, atol=tol)


def test_ignored_labels_give_zero_logprob_and_no_grad():
    logits, labels, _, _ = _case((2, 5), 33, torch.float32, n_ignore=0)
    labels[0, 1] = IGNORE_INDEX
    x = logits.clone().requires_grad_(True)
    logp = logprobs_from_logits(x, labels)
    assert logp[0, 1] == 0
    logp.sum().backward()
    assert torch.all(x.grad[0, 1] == 0)
    assert torch.any(x.grad[0, 0] != 0)


def test_logprob_only_output_and_large_logits_are_stable():
    logits = torch.tensor([[1000.0, 0.0, -1000.0], [5.0, 5.0, 5.0]])
    labels = torch.tensor([0, 2])
    logp = logprobs_from_logits(logits, labels)
    torch.testing.assert_close(logp, torch.tensor([0.0, -torch.log(torch.tensor(3.0)).item()]))
    _, ent = logprobs_from_logits(logits, labels, return_entropy=True)
    torch.testing.assert_close(ent, torch.tensor([0.0, torch.log(torch.tensor(3.0)).item()]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(labels=torch.tensor([0, 9])), r"labels must be in \[0, 9\)"),
        (dict(labels=torch.tensor([0, -2])), r"got -2"),
        (dict(labels=torch.tensor([[0, 1]])), r"labels shape \(1, 2\) must equal"),
        (dict(labels=torch.tensor([0.0, 1.0])), r"labels must be int64"),
        (dict(labels=torch.tensor([0, 1]), temperature=0.0), r"temperature must be > 0"),
        (dict(labels=torch.tensor([0, 1]), backend="cuda"), r"backend must be"),
    ],
)
def test_bad_input_raises_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        logprobs_from_logits(torch.randn(2, 9), **kwargs)
