"""roll.ops.group_stats (the CPU path; tests/gpu compares the CUDA kernel) against per-group
statistics computed with plain Python loops."""

import statistics

import pytest
import torch

from roll.ops import group_stats


def test_matches_python_statistics():
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(200, generator=generator) * 3 + 1
    group_index = torch.randint(0, 12, (200,), generator=generator)
    group_index[group_index == 5] = 6  # group 5 empty
    group_index[group_index == 7] = 8
    group_index[0] = 7  # group 7 has exactly one item
    count, mean, std = group_stats(values, group_index, num_groups=13)
    for g in range(13):
        members = [float(v) for v, i in zip(values, group_index) if int(i) == g]
        assert int(count[g]) == len(members)
        assert float(mean[g]) == pytest.approx(statistics.fmean(members) if members else 0.0, abs=1e-5)
        expected_std = statistics.stdev(members) if len(members) > 1 else 0.0
        assert float(std[g]) == pytest.approx(expected_std, abs=1e-5)
    _, _, biased = group_stats(values, group_index, num_groups=13, unbiased=False)
    members = [float(v) for v, i in zip(values, group_index) if int(i) == 3]
    assert float(biased[3]) == pytest.approx(statistics.pstdev(members), abs=1e-5)


def test_default_num_groups_and_bad_ids():
    count, _, _ = group_stats(torch.ones(4), torch.tensor([0, 2, 2, 1]))
    assert count.tolist() == [1, 1, 2]
    with pytest.raises(ValueError, match=r"group ids span \[0, 3\] but num_groups is 2"):
        group_stats(torch.ones(2), torch.tensor([0, 3]), num_groups=2)
    with pytest.raises(ValueError, match="group_index must be int64"):
        group_stats(torch.ones(2), torch.tensor([0, 1], dtype=torch.int32))
