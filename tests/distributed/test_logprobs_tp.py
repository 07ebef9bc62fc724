"""Vocab-parallel logprobs_from_logits on 2 gloo ranks vs the naive single-process reference on the full vocab,
for the chunked torch path and the Triton kernels (interpreted on CPU)."""

import itertools

import torch
import torch.distributed as dist
from launcher import run_distributed

from roll.kernels.logprobs import IGNORE_INDEX, logprobs_from_logits

VOCAB = 66
TP = 2
DTYPES = (torch.float32, torch.bfloat16)
BACKENDS = ("torch", "triton")  # triton runs under TRITON_INTERPRET=1 on the CPU ranks


def _case(dtype):
    gen = torch.Generator().manual_seed(7)
    logits = (torch.randn(4, 5, VOCAB, generator=gen) * 3).to(dtype)
    labels = torch.randint(0, VOCAB, (4, 5), generator=gen)
    labels[0, :2] = IGNORE_INDEX
    labels[1, 0], labels[1, 1] = 0, VOCAB - 1  # first/last id of the two shards' edges
    labels[1, 2], labels[1, 3] = VOCAB // TP - 1, VOCAB // TP
    w_lp, w_h = torch.randn(4, 5, generator=gen), torch.randn(4, 5, generator=gen)
    return logits, labels, w_lp, w_h


def _naive(logits, labels, temperature, w_lp, w_h):
    x = logits.clone().requires_grad_(True)
    logp_all = torch.log_softmax(x.float() / temperature, dim=-1)
    logp = logp_all.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    logp = torch.where(labels == IGNORE_INDEX, torch.zeros_like(logp), logp)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    ((logp * w_lp).sum() + (entropy * w_h).sum()).backward()
    return logp.detach(), entropy.detach(), x.grad


def _rank_fn(temperature):
    rank, shard = dist.get_rank(), VOCAB // TP
    out = {}
    for backend, dtype in itertools.product(BACKENDS, DTYPES):
        logits, labels, w_lp, w_h = _case(dtype)
        local = logits[..., rank * shard : (rank + 1) * shard].clone().requires_grad_(True)
        logp, ent = logprobs_from_logits(
            local, labels, temperature, return_entropy=True, tp_group=dist.group.WORLD, backend=backend
        )
        ((logp * w_lp).sum() + (ent * w_h).sum()).backward()
        out[backend, dtype] = (logp.detach(), ent.detach(), local.grad.float())
    return out


def test_vocab_parallel_matches_full_vocab_reference(monkeypatch):
    # Spawned ranks inherit it; it must be set before their first `import triton`.
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    temperature = 0.8
    results = run_distributed(_rank_fn, TP, temperature, timeout=120)
    shard = VOCAB // TP
    for backend, dtype in itertools.product(BACKENDS, DTYPES):
        logits, labels, w_lp, w_h = _case(dtype)
        ref_logp, ref_ent, ref_grad = _naive(logits, labels, temperature, w_lp, w_h)
        tol = 1e-5 if dtype == torch.float32 else 1e-2
        for rank, per_dtype in enumerate(results):
            logp, ent, grad = per_dtype[backend, dtype]
            torch.testing.assert_close(logp, ref_logp, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(ent, ref_ent, rtol=1e-5, atol=1e-5)
            ref_shard = ref_grad[..., rank * shard : (rank + 1) * shard]
            torch.testing.assert_close(grad, ref_shard.float(), rtol=tol, atol=tol)
