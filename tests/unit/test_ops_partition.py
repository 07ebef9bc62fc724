"""roll.ops.partition: the C++ best-of Karmarkar-Karp / greedy LPT against its pure-Python twin
(identical partitions), never worse than either alone (a plain LPT loop written here), against a
brute-force optimum on tiny inputs (the published KK worst-case ratios), and the budgeted
micro-batch split and workload model against closed forms."""

import heapq
import importlib.util
import itertools
import math

import numpy as np
import pytest

from roll.ops import balanced_partition, imbalance_ratio, partition_by_budget, sequence_workload
from roll.ops.partition import balanced_partition_reference, karmarkar_karp_reference

requires_extension = pytest.mark.skipif(
    importlib.util.find_spec("roll._C") is None, reason="roll._C is not built"
)


def _assert_is_partition(parts, n, k, equal_size):
    assert len(parts) == k
    assert sorted(i for part in parts for i in part) == list(range(n))
    if equal_size:
        assert all(len(part) == n // k for part in parts)


def _greedy_lpt(workloads, k, equal_size):
    """Heaviest item first onto the lightest part that still has room."""
    capacity = len(workloads) // k if equal_size else len(workloads)
    parts = [[] for _ in range(k)]
    lightest = [(0.0, part) for part in range(k)]
    for item in np.argsort(-np.asarray(workloads), kind="stable"):
        load, part = heapq.heappop(lightest)
        parts[part].append(int(item))
        if len(parts[part]) < capacity:
            heapq.heappush(lightest, (load + workloads[item], part))
    return parts


def _part_sums(workloads, parts):
    return [float(np.sum(np.asarray(workloads)[part])) for part in parts]


def _optimal_max_sum(workloads, k, equal_size):
    """Smallest possible largest part sum, by enumerating every assignment of items to parts."""
    w = np.asarray(workloads, dtype=np.float64)
    assignments = np.array(list(itertools.product(range(k), repeat=len(w))))
    one_hot = assignments[:, :, None] == np.arange(k)[None, None, :]
    if equal_size:
        one_hot = one_hot[(one_hot.sum(axis=1) == len(w) // k).all(axis=1)]
    return (one_hot * w[None, :, None]).sum(axis=1).max(axis=1).min()


@requires_extension
@pytest.mark.parametrize("equal_size", [True, False])
@pytest.mark.parametrize("k", [1, 2, 3, 8, 16])
def test_cpp_matches_python_reference(k, equal_size):
    rng = np.random.default_rng(k)
    for trial in range(5):
        n = k * int(rng.integers(1, 40))
        # Small integers give many ties (tie-breaking); magnitudes over 15 decades use every
        # digit of the C++ radix sort.
        if trial == 4:
            workloads = 10.0 ** rng.uniform(-3, 12, size=n)
        else:
            workloads = rng.integers(0, 20 if trial % 2 else 10_000, size=n).astype(np.float64)
        parts = balanced_partition(workloads, k, equal_size)
        assert parts == balanced_partition_reference(workloads.tolist(), k, equal_size)
        _assert_is_partition(parts, n, k, equal_size)


def _long_tailed_batches(k, count=20):
    """RL-like response lengths (lognormal, clipped), a few to a dozen per part: LPT often wins."""
    rng = np.random.default_rng(100 + k)
    for _ in range(count):
        yield np.clip(rng.lognormal(7.0, 0.9, size=k * int(rng.integers(1, 12))), 16, 16384)


@pytest.mark.parametrize("equal_size", [True, False])
@pytest.mark.parametrize("k", [4, 16])
def test_never_worse_than_karmarkar_karp_or_greedy_alone(k, equal_size):
    winners = set()
    for workloads in _long_tailed_batches(k):
        n = len(workloads)
        parts = balanced_partition(workloads, k, equal_size)
        _assert_is_partition(parts, n, k, equal_size)
        sums = _part_sums(workloads, parts)
        assert sums == sorted(sums) and all(part == sorted(part) for part in parts)
        kk_max = max(_part_sums(workloads, karmarkar_karp_reference(workloads.tolist(), k, equal_size)))
        lpt_max = max(_part_sums(workloads, _greedy_lpt(workloads, k, equal_size)))
        assert max(sums) <= min(kk_max, lpt_max) * (1 + 1e-12)
        winners.add("lpt" if lpt_max < kk_max else "kk")
    # Both branches of the choice are exercised (KK here includes ties).
    assert winners == {"lpt", "kk"}


@requires_extension
@pytest.mark.parametrize("equal_size", [True, False])
@pytest.mark.parametrize("k", [4, 16])
def test_cpp_matches_python_reference_where_greedy_wins(k, equal_size):
    for workloads in _long_tailed_batches(k):
        assert balanced_partition(workloads, k, equal_size) == balanced_partition_reference(
            workloads.tolist(), k, equal_size
        )


def test_small_equal_size_batch_gets_the_greedy_quality():
    # bench/bench_partition.py's 128 sequences into 16 parts: KK alone 6.2e-2, greedy 2.2e-2.
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(mean=7.0, sigma=0.9, size=4096), 16, 16384).astype(np.int64)
    workloads = sequence_workload(lengths)[:128]
    result = imbalance_ratio(workloads, balanced_partition(workloads, 16))
    greedy = imbalance_ratio(workloads, _greedy_lpt(workloads, 16, True))
    kk_alone = imbalance_ratio(workloads, karmarkar_karp_reference(workloads.tolist(), 16, True))
    assert result == pytest.approx(greedy, rel=1e-12)
    assert result - 1 < 0.03 < 0.05 < kk_alone - 1


@pytest.mark.parametrize("equal_size", [True, False])
@pytest.mark.parametrize("reference", [karmarkar_karp_reference, balanced_partition_reference])
def test_python_reference_is_a_partition_with_ascending_sums(reference, equal_size):
    workloads = np.random.default_rng(0).random(96).tolist()
    parts = reference(workloads, 6, equal_size)
    _assert_is_partition(parts, 96, 6, equal_size)
    sums = [sum(workloads[i] for i in part) for part in parts]
    assert sums == sorted(sums)
    assert all(part == sorted(part) for part in parts)


@pytest.mark.parametrize("k", [2, 3])
def test_within_published_worst_case_ratio_of_the_optimum(k):
    # Michiels et al. (2003): LDM's largest sum is <= (4/3 - 1/(3k)) x optimum; the balanced
    # variant with k parts is <= (2 - 1/k) x optimum.
    rng = np.random.default_rng(k)
    for _ in range(30):
        n = k * int(rng.integers(1, 9 // k + 1))
        workloads = rng.integers(1, 100, size=n).astype(np.float64)
        for equal_size, bound in ((False, 4 / 3 - 1 / (3 * k)), (True, 2 - 1 / k)):
            parts = balanced_partition(workloads, k, equal_size)
            _assert_is_partition(parts, n, k, equal_size)
            largest = max(workloads[part].sum() for part in parts)
            assert largest <= bound * _optimal_max_sum(workloads, k, equal_size) + 1e-9


def test_two_way_textbook_example():
    # {8, 7, 6, 5, 4}: differencing gives sums 16 and 14 (the optimum is 15/15).
    parts = balanced_partition([8, 7, 6, 5, 4], 2, equal_size=False)
    assert sorted(sum([8, 7, 6, 5, 4][i] for i in part) for part in parts) == [14, 16]


def test_balances_better_than_contiguous_chunks():
    lengths = np.random.default_rng(1).integers(16, 4096, size=512)
    workloads = sequence_workload(lengths)
    parts = balanced_partition(workloads, 8)
    chunks = [list(range(i, i + 64)) for i in range(0, 512, 64)]
    assert imbalance_ratio(workloads, parts) < 1.01 < imbalance_ratio(workloads, chunks)


def test_bad_arguments_name_the_values():
    with pytest.raises(ValueError, match=r"len\(workloads\) \(10\) divisible by k \(3\)"):
        balanced_partition(list(range(10)), 3)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        balanced_partition([1.0], 0)
    with pytest.raises(ValueError, match="finite and >= 0, got -1"):
        balanced_partition([1.0, -1.0], 2)


def test_fewer_items_than_parts_leaves_empty_parts():
    parts = balanced_partition([5.0, 3.0], 4, equal_size=False)
    assert sorted(map(len, parts)) == [0, 0, 1, 1]
    assert balanced_partition([], 3) == [[], [], []]


def test_partition_by_budget_fits_and_uses_few_parts():
    rng = np.random.default_rng(2)
    for _ in range(20):
        tokens = rng.integers(1, 2048, size=int(rng.integers(1, 200))).astype(np.float64)
        budget = 4096.0
        parts = partition_by_budget(tokens, budget)
        assert sorted(i for part in parts for i in part) == list(range(len(tokens)))
        assert all(tokens[part].sum() <= budget for part in parts)
        assert len(parts) >= math.ceil(tokens.sum() / budget)


def test_partition_by_budget_rejects_an_item_over_budget():
    with pytest.raises(ValueError, match="item 1 has workload 9 > budget 8"):
        partition_by_budget([3, 9, 2], 8)


def test_sequence_workload_closed_form():
    np.testing.assert_allclose(sequence_workload([0, 2, 10], attn_coef=2.0, linear_coef=3.0), [0, 14, 230])


def test_imbalance_ratio():
    assert imbalance_ratio([1, 2, 3, 6], [[0, 1, 2], [3]]) == 1.0
    assert imbalance_ratio([1, 3], [[0], [1]]) == 3.0
    assert imbalance_ratio([0, 3], [[0], [1]]) == math.inf
