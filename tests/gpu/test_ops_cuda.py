"""The CUDA ops of roll._C_cuda (csrc/cuda/) against the torch references on the same GPU
tensors: the GAE scan (and the CPU C++ scan) and the segmented group statistics."""

import importlib.util

import pytest
import torch

from roll.ops import gae, group_stats
from roll.ops.gae_scan import gae_reference
from roll.ops.segmented_stats import group_stats_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(importlib.util.find_spec("roll._C_cuda") is None, reason="roll._C_cuda is not built"),
]


@pytest.mark.parametrize("batch, length", [(1, 1), (5, 33), (70, 1000), (256, 2048)])
def test_gae_cuda_matches_torch_loop(batch, length):
    generator = torch.Generator().manual_seed(batch)
    rewards, values = torch.randn(2, batch, length, generator=generator)
    mask = (torch.rand(batch, length, generator=generator) > 0.3).float()
    expected_adv, expected_ret = gae_reference(rewards, values, mask, 0.99, 0.95)
    advantages, returns = gae(rewards.cuda(), values.cuda(), mask.cuda(), 0.99, 0.95)
    assert advantages.is_cuda and returns.is_cuda
    # --use_fast_math contracts a * b + c into FMAs, so the last bits may differ from the CPU loop.
    torch.testing.assert_close(advantages.cpu(), expected_adv, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(returns.cpu(), expected_ret, atol=1e-4, rtol=1e-4)
    cpu_adv, _ = gae(rewards, values, mask, 0.99, 0.95)
    torch.testing.assert_close(advantages.cpu(), cpu_adv, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("unbiased", [True, False])
def test_group_stats_cuda_matches_reference(unbiased):
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(100_000, generator=generator) * 5 + 3
    group_index = torch.randint(0, 777, (100_000,), generator=generator)
    group_index[group_index == 10] = 11  # an empty group
    group_index[0] = 10  # ... now a singleton
    expected = group_stats_reference(values, group_index, 800, unbiased)
    count, mean, std = group_stats(values.cuda(), group_index.cuda(), 800, unbiased)
    assert torch.equal(count.cpu(), expected[0])
    torch.testing.assert_close(mean.cpu(), expected[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(std.cpu(), expected[2], atol=1e-5, rtol=1e-5)
