"""Balanced partitioning of per-sequence workloads: the better of Karmarkar-Karp largest
differencing and greedy LPT into k parts (equal item counts for data-parallel ranks, or free
counts), micro-batches under a token budget, the per-sequence workload model and the imbalance
metric.

`balanced_partition` runs the C++ version in `roll._C` (csrc/partition.cpp) and falls back to
`balanced_partition_reference` (`karmarkar_karp_reference`, `greedy_lpt_reference` and the same
choice, with the same tie-breaking, in pure Python), so both return identical partitions.
"""

import heapq
import math
from collections.abc import Sequence

import numpy as np

from roll.ops._extension import cpu_extension, log_fallback
from roll.ops.packing import first_fit_decreasing

# Per layer, a token costs ~24·h² MACs in the dense matmuls (QKV/O projections and a 4h MLP) and
# ~h·L MACs in causal attention (QKᵀ and AV over L/2 keys on average): a sequence of length L
# costs ∝ L² + 24·h·L. The default linear coefficient is 24·h for h = 4096 (a 7B-class model).
DEFAULT_ATTN_COEF = 1.0
DEFAULT_LINEAR_COEF = 24.0 * 4096


def sequence_workload(
    seq_lens: Sequence[int] | np.ndarray,
    attn_coef: float = DEFAULT_ATTN_COEF,
    linear_coef: float = DEFAULT_LINEAR_COEF,
) -> np.ndarray:
    """Relative compute cost per sequence: `attn_coef * L**2 + linear_coef * L` (float64, (N,))."""
    lengths = np.asarray(seq_lens, dtype=np.float64)
    return attn_coef * lengths * lengths + linear_coef * lengths


def imbalance_ratio(workloads: Sequence[float] | np.ndarray, parts: Sequence[Sequence[int]]) -> float:
    """max / min of the part sums (1.0 is perfect balance; inf when a part sums to 0)."""
    values = np.asarray(workloads, dtype=np.float64)
    sums = [float(values[list(part)].sum()) for part in parts]
    if not sums:
        raise ValueError("imbalance_ratio: parts is empty; pass at least one part")
    return math.inf if min(sums) <= 0 else max(sums) / min(sums)


def _as_workloads(workloads: Sequence[float] | np.ndarray, op_name: str) -> np.ndarray:
    values = np.asarray(workloads, dtype=np.float64).reshape(-1)
    if values.size and (not np.all(np.isfinite(values)) or values.min() < 0):
        bad = values[~np.isfinite(values) | (values < 0)][0]
        raise ValueError(f"{op_name}: workloads must be finite and >= 0, got {bad}; fix the workload values")
    return values


def karmarkar_karp_reference(workloads: Sequence[float], k: int, equal_size: bool) -> list[list[int]]:
    """Pure-Python Karmarkar-Karp, step for step the algorithm of csrc/partition.cpp.

    A state is k parts `[sum, items]` sorted by ascending sum (stable). The two states with the
    largest spread (max - min sum; ties: oldest first) are merged heaviest part with lightest.
    """
    n = len(workloads)
    order = sorted(range(n), key=lambda i: workloads[i])
    states: list[list[list]] = []
    if equal_size:
        for offset in range(0, n, k):
            states.append([[workloads[i], [i]] for i in order[offset : offset + k]])
    else:
        for i in order:
            states.append([[0.0, []] for _ in range(k - 1)] + [[workloads[i], [i]]])
    if not states:
        return [[] for _ in range(k)]

    heap = [(-(s[-1][0] - s[0][0]), state_id, s) for state_id, s in enumerate(states)]
    heapq.heapify(heap)
    next_id = len(states)
    while len(heap) > 1:
        heavy = heapq.heappop(heap)[2]
        light = heapq.heappop(heap)[2]
        merged = [[a[0] + b[0], a[1] + b[1]] for a, b in zip(reversed(heavy), light)]
        merged.sort(key=lambda part: part[0])
        heapq.heappush(heap, (-(merged[-1][0] - merged[0][0]), next_id, merged))
        next_id += 1
    return [sorted(part[1]) for part in heap[0][2]]


def greedy_lpt_reference(workloads: Sequence[float], k: int, equal_size: bool) -> list[list[int]]:
    """Greedy LPT, step for step the `greedy_lpt` of csrc/partition.cpp.

    Items by descending workload (ties: ascending index), each onto the part with the smallest sum
    (ties: lowest part number) among those with room; parts then ordered by ascending sum (ties:
    part number).
    """
    n = len(workloads)
    capacity = n // k if equal_size else n
    sums = [0.0] * k
    parts: list[list[int]] = [[] for _ in range(k)]
    lightest = [(0.0, part) for part in range(k)]
    for item in sorted(range(n), key=lambda i: -workloads[i]):
        part = heapq.heappop(lightest)[1]
        parts[part].append(item)
        sums[part] += workloads[item]
        if len(parts[part]) < capacity:
            heapq.heappush(lightest, (sums[part], part))
    return [sorted(parts[j]) for j in sorted(range(k), key=lambda j: sums[j])]


def _max_and_spread(workloads: Sequence[float], parts: list[list[int]]) -> tuple[float, float]:
    # Each part summed left to right in ascending item order, as csrc/partition.cpp does, so both
    # pick alike (not `sum`, which compensates rounding from Python 3.12 on).
    sums = []
    for part in parts:
        total = 0.0
        for i in part:
            total += workloads[i]
        sums.append(total)
    return max(sums), max(sums) - min(sums)


def balanced_partition_reference(workloads: Sequence[float], k: int, equal_size: bool) -> list[list[int]]:
    """Pure-Python `balanced_partition`: LPT when its largest part sum (then its spread) is
    strictly smaller than Karmarkar-Karp's, else KK."""
    kk = karmarkar_karp_reference(workloads, k, equal_size)
    lpt = greedy_lpt_reference(workloads, k, equal_size)
    return lpt if _max_and_spread(workloads, lpt) < _max_and_spread(workloads, kk) else kk


def balanced_partition(
    workloads: Sequence[int | float] | np.ndarray, k: int, equal_size: bool = True
) -> list[list[int]]:
    """Split item indices into `k` parts of near-equal workload sum.

    Runs Karmarkar-Karp and greedy LPT and returns the one with the smaller largest part sum
    (then the smaller max - min spread; KK on ties): KK balances large batches orders of magnitude
    better, LPT is often better with equal part sizes on small batches (e.g. 128 items into 16).
    With `equal_size` every part gets `len(workloads) // k` items (for data-parallel ranks).
    Each part's indices are ascending; parts are ordered by ascending workload sum.
    """
    if k < 1:
        raise ValueError(f"balanced_partition: k must be >= 1, got {k}")
    values = _as_workloads(workloads, "balanced_partition")
    if equal_size and values.size % k != 0:
        raise ValueError(
            f"balanced_partition: equal_size=True needs len(workloads) ({values.size}) divisible by "
            f"k ({k}); pad the batch to a multiple of k or pass equal_size=False"
        )
    extension = cpu_extension()
    if extension is not None:
        return extension.balanced_partition(values, k, equal_size)
    log_fallback("balanced_partition", "roll._C")
    return balanced_partition_reference(values.tolist(), k, equal_size)


def partition_by_budget(workloads: Sequence[int | float] | np.ndarray, budget: float) -> list[list[int]]:
    """Micro-batches whose workload sums (e.g. token counts) stay within `budget`, balanced.

    Tries `balanced_partition` (free part sizes) with k = ceil(total / budget) parts, then k + 1, ...
    up to the number of first-fit-decreasing bins, and returns the first split whose heaviest part
    fits; FFD always fits, so its bins are the answer when no split up to that count does.
    Empty parts are dropped.
    """
    values = _as_workloads(workloads, "partition_by_budget")
    if budget <= 0:
        raise ValueError(f"partition_by_budget: budget must be > 0, got {budget}")
    if values.size == 0:
        return []
    if values.max() > budget:
        index = int(values.argmax())
        raise ValueError(
            f"partition_by_budget: item {index} has workload {values[index]:g} > budget {budget:g}; "
            "raise the budget (e.g. max_tokens_per_microbatch) or truncate the sequence"
        )
    ffd_bins = first_fit_decreasing(values, budget)
    for k in range(max(1, math.ceil(values.sum() / budget)), len(ffd_bins) + 1):
        parts = [part for part in balanced_partition(values, k, equal_size=False) if part]
        if max(values[part].sum() for part in parts) <= budget:
            return parts
    return ffd_bins
