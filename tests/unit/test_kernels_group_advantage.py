"""Group advantage: torch reference and Triton kernel (TRITON_INTERPRET=1 child) vs a plain Python loop,
and agreement with roll.algorithms.advantages (same singleton / std / leave-one-out semantics)."""

import os
import statistics
import subprocess
import sys

import pytest
import torch

from roll.algorithms import advantages as alg
from roll.kernels.group_advantage import group_advantage

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
BACKENDS = ["torch", "triton"] if INTERPRETED else ["torch"]
CASES = [
    ("grpo", True),
    ("grpo", False),
    ("rloo", True),
    ("reinforce_plus_plus_baseline", True),
]


def loop_reference(scores, mask, group_index, estimator, norm_by_std, eps):
    """One sample at a time with Python floats: the definitions written out."""
    scores, ids = scores.tolist(), group_index.tolist()
    out = []
    for i, s in enumerate(scores):
        group = [scores[j] for j in range(len(scores)) if ids[j] == ids[i]]
        n, mean = len(group), statistics.fmean(group)
        if n == 1:
            adv = 0.0
        elif estimator == "grpo" and norm_by_std:
            adv = (s - mean) / (statistics.stdev(group) + eps)
        elif estimator == "rloo":
            adv = s - (sum(group) - s) / (n - 1)
        else:
            adv = s - mean
        out.append(adv)
    return torch.tensor(out)[:, None] * mask


def _batch(seed=0, batch=13, width=37):
    gen = torch.Generator().manual_seed(seed)
    # Unsorted, non-contiguous ids with groups of sizes 1..5.
    group_index = torch.tensor([7, 3, 7, 42, 3, 7, 3, -5, 42, 7, 3, 7, 100])[:batch]
    scores = torch.randn(batch, generator=gen)
    scores[group_index == 42] = 0.5  # a group with zero std
    mask = (torch.rand(batch, width, generator=gen) > 0.3).float()
    return scores, mask, group_index


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("estimator, norm_by_std", CASES)
def test_matches_python_loop(backend, estimator, norm_by_std):
    scores, mask, group_index = _batch()
    got = group_advantage(scores, mask, group_index, estimator, norm_by_std=norm_by_std, backend=backend)
    ref = loop_reference(scores, mask, group_index, estimator, norm_by_std, 1e-6)
    assert got.dtype == torch.float32 and got.shape == mask.shape
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    singleton_rows = [12, 7]  # ids 100 and -5
    assert torch.all(got[singleton_rows] == 0)
    assert torch.all(got[group_index == 42] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("estimator, norm_by_std", CASES)
def test_group_of_equal_scores_gives_exactly_zero(backend, estimator, norm_by_std):
    # 0.7 is not a dyadic fraction: a plain mean of 7 copies is off by an ulp, and / eps amplifies it.
    scores = torch.tensor([0.7] * 7 + [0.1, 0.3])
    group_index = torch.tensor([5] * 7 + [6, 6])
    got = group_advantage(
        scores, torch.ones(9, 2), group_index, estimator, norm_by_std=norm_by_std, backend=backend
    )
    assert torch.all(got[:7] == 0)
    assert torch.all(got[7:] != 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_agrees_with_algorithms_advantages(backend):
    scores, mask, group_index = _batch(seed=1)
    grpo, _ = alg.compute_grpo_outcome_advantage(scores, mask, group_index, norm_by_std=True)
    dr_grpo, _ = alg.compute_grpo_outcome_advantage(scores, mask, group_index, norm_by_std=False)
    rloo, _ = alg.compute_rloo_outcome_advantage(scores, mask, group_index)
    baseline, _ = alg.compute_reinforce_plus_plus_baseline_advantage(scores, mask, group_index)
    ours = {
        (est, std): group_advantage(scores, mask, group_index, est, norm_by_std=std, backend=backend)
        for est, std in CASES
    }
    torch.testing.assert_close(ours["grpo", True], grpo, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours["grpo", False], dr_grpo, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours["rloo", True], rloo, rtol=1e-5, atol=1e-5)
    # algorithms whitens REINFORCE++-baseline over the batch tokens after the group-mean subtraction.
    whitened = alg.whiten(ours["reinforce_plus_plus_baseline", True], mask)
    torch.testing.assert_close(whitened, baseline, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_group_spans_several_blocks(backend, monkeypatch):
    from roll.kernels import group_advantage_triton

    monkeypatch.setattr(group_advantage_triton, "_MAX_BLOCK_G", 8)
    gen = torch.Generator().manual_seed(2)
    group_index = torch.randint(0, 2, (45,), generator=gen)  # ~22 per group: three 8-lane passes
    scores = torch.randn(45, generator=gen)
    mask = torch.ones(45, 3)
    got = group_advantage(scores, mask, group_index, "grpo", backend=backend)
    ref = loop_reference(scores, mask, group_index, "grpo", True, 1e-6)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.zeros(3), torch.ones(3, 4), torch.arange(3), "ppo"), r"estimator must be one of"),
        ((torch.zeros(2), torch.ones(3, 4), torch.arange(3), "grpo"), r"scores must be \(B,\)"),
        ((torch.zeros(3), torch.ones(3, 4), torch.zeros(3), "grpo"), r"group_index must be \(B,\) integer"),
    ],
)
def test_bad_input_raises_clear_error(args, match):
    with pytest.raises(ValueError, match=match):
        group_advantage(*args)


@pytest.mark.skipif(INTERPRETED, reason="already under the interpreter")
def test_triton_cases_under_interpreter():
    # Triton decides interpreter vs compiler at import, so the triton cases run in a fresh child.
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "triton", __file__]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"interpreted cases failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    assert " passed" in proc.stdout and " failed" not in proc.stdout
