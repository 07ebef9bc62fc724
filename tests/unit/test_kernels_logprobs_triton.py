"""Triton logprob/entropy kernels under TRITON_INTERPRET=1 (CPU tensors) vs the naive full log_softmax.

Triton picks interpreter or compiler when a kernel is decorated, i.e. at import, so the cases run
in a child pytest started with TRITON_INTERPRET=1; that keeps this process's Triton (compiled on
GPU machines) untouched. Running this file directly with TRITON_INTERPRET=1 runs the cases.
"""

import os
import subprocess
import sys

import pytest
import torch

from roll.kernels.logprobs import IGNORE_INDEX, logprobs_from_logits

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
interpreted_only = pytest.mark.skipif(
    not INTERPRETED, reason="runs in the TRITON_INTERPRET=1 child of test_cases_under_interpreter"
)


@pytest.mark.skipif(INTERPRETED, reason="already under the interpreter")
def test_cases_under_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"interpreted cases failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    assert " passed" in proc.stdout and " failed" not in proc.stdout


def _naive(logits, labels, temperature):
    logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)
    logp = logp_all.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    logp = torch.where(labels == IGNORE_INDEX, torch.zeros_like(logp), logp)
    return logp, -(logp_all.exp() * logp_all).sum(-1)


def _run(fn, logits, labels, temperature, w_lp, w_h):
    x = logits.clone().requires_grad_(True)
    logp, ent = fn(x, labels, temperature)
    ((logp * w_lp).sum() + (ent * w_h).sum()).backward()
    return logp.detach(), ent.detach(), x.grad


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 16 columns so a 101-wide vocab takes several online-max steps and a ragged tail."""
    from roll.kernels import logprobs_triton

    monkeypatch.setattr(logprobs_triton, "_default_block", lambda vocab, cap: 16)


@interpreted_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_triton_matches_naive_forward_and_backward(dtype, temperature, small_blocks):
    gen = torch.Generator().manual_seed(3)
    logits = (torch.randn(2, 3, 101, generator=gen) * 4).to(dtype)
    labels = torch.randint(0, 101, (2, 3), generator=gen)
    labels[1, 2] = IGNORE_INDEX
    w_lp, w_h = torch.randn(2, 3, generator=gen), torch.randn(2, 3, generator=gen)
    w_h[1, 2] = 0.0  # so the ignored row must get no grad at all

    def triton_path(x, lab, t):
        return logprobs_from_logits(x, lab, t, return_entropy=True, backend="triton")

    got = _run(triton_path, logits, labels, temperature, w_lp, w_h)
    ref = _run(_naive, logits, labels, temperature, w_lp, w_h)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-5, atol=1e-5)
    assert got[2].dtype == dtype and torch.all(got[2][1, 2] == 0)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got[2].float(), ref[2].float(), rtol=tol, atol=tol)


@interpreted_only
def test_stats_kernel_on_strided_rows_and_out_of_shard_labels(small_blocks):
    from roll.kernels.logprobs_triton import shard_stats_triton

    wide = torch.randn(4, 80)
    logits = wide[:, 5:55]  # row stride 80, not 50
    local_labels = torch.tensor([0, -1, 49, 17])  # -1: label on another rank
    m, s, w, tgt = shard_stats_triton(logits, local_labels, 1.0)
    torch.testing.assert_close(m, logits.amax(-1))
    torch.testing.assert_close(s, torch.exp(logits - m[:, None]).sum(-1))
    torch.testing.assert_close(w, (torch.exp(logits - m[:, None]) * (logits - m[:, None])).sum(-1))
    torch.testing.assert_close(tgt, torch.tensor([logits[0, 0], 0.0, logits[2, 49], logits[3, 17]]))
