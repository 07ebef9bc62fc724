"""Benchmark of balanced partitioning (not a test): the C++ `balanced_partition` in roll._C (the
better of Karmarkar-Karp and greedy LPT) against the pure-Python implementation of the same
algorithm (speed, identical result), and its balance against contiguous chunks, greedy (LPT)
assignment and Karmarkar-Karp alone.

Run from the repository root:  python bench/bench_partition.py [--n 4096] [--k 16] [--repeats 20]
"""

import argparse
import heapq
import time

import numpy as np

from roll.ops import balanced_partition, imbalance_ratio, partition_by_budget, sequence_workload
from roll.ops._extension import cpu_extension
from roll.ops.packing import first_fit_decreasing
from roll.ops.partition import balanced_partition_reference, karmarkar_karp_reference


def greedy_partition(workloads: np.ndarray, k: int, equal_size: bool) -> list[list[int]]:
    """LPT: heaviest item first onto the currently lightest part (that still has room)."""
    capacity = len(workloads) // k if equal_size else len(workloads)
    heap = [(0.0, part) for part in range(k)]
    parts: list[list[int]] = [[] for _ in range(k)]
    for item in np.argsort(-workloads, kind="stable"):
        load, part = heapq.heappop(heap)
        parts[part].append(int(item))
        if len(parts[part]) < capacity:
            heapq.heappush(heap, (load + workloads[item], part))
    return parts


def best_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def print_balance(workloads: np.ndarray, k: int) -> None:
    """max/min part workload - 1 (0 is perfect) per method, equal and free part sizes."""
    n = len(workloads)
    chunk = n // k
    contiguous = [list(range(i * chunk, (i + 1) * chunk)) for i in range(k)]
    print(f"\nbalance of {n} sequences in {k} parts, max/min part workload - 1:")
    print(f"{'method':>34} {'equal counts':>13} {'free counts':>12}")
    print(
        f"{'contiguous chunks (no balancing)':>34} {imbalance_ratio(workloads, contiguous) - 1:13.2e} {'':>12}"
    )
    methods = (
        ("greedy LPT", greedy_partition),
        ("Karmarkar-Karp alone", lambda w, k, eq: karmarkar_karp_reference(w.tolist(), k, eq)),
        ("balanced_partition (best of both)", balanced_partition),
    )
    for name, partition in methods:
        equal = imbalance_ratio(workloads, partition(workloads, k, True)) - 1
        free = imbalance_ratio(workloads, partition(workloads, k, False)) - 1
        print(f"{name:>34} {equal:13.2e} {free:12.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="number of sequences")
    parser.add_argument("--k", type=int, default=16, help="number of parts (data-parallel ranks)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if cpu_extension() is None:
        raise SystemExit("roll._C is not built: run `python setup.py build_ext --inplace` first")

    # Long-tailed response lengths, as in RL rollouts: most short, a few near the limit.
    rng = np.random.default_rng(0)
    seq_lens = np.clip(rng.lognormal(mean=7.0, sigma=0.9, size=args.n), 16, 16384).astype(np.int64)
    workloads = sequence_workload(seq_lens)
    workload_list = workloads.tolist()

    print(
        f"{args.n} sequences (lengths {seq_lens.min()}..{seq_lens.max()}, mean {seq_lens.mean():.0f}) into {args.k} parts"
    )
    print(f"{'equal_size':>10} {'C++ ms':>9} {'Python ms':>10} {'speed-up':>9} {'identical':>10}")
    for equal_size in (True, False):
        cpp = best_seconds(lambda eq=equal_size: balanced_partition(workloads, args.k, eq), args.repeats)
        python = best_seconds(
            lambda eq=equal_size: balanced_partition_reference(workload_list, args.k, eq), args.repeats
        )
        same = balanced_partition(workloads, args.k, equal_size) == balanced_partition_reference(
            workload_list, args.k, equal_size
        )
        print(f"{equal_size!s:>10} {cpp * 1e3:9.3f} {python * 1e3:10.3f} {python / cpp:8.1f}x {same!s:>10}")

    for n in (args.n, 8 * args.k):
        print_balance(workloads[:n], args.k)

    # Micro-batches of one rank's share under a token budget: balanced-first vs plain FFD.
    tokens = seq_lens[: args.n // args.k].astype(np.float64)
    budget = 4 * float(seq_lens.max())
    kk_parts = partition_by_budget(tokens, budget)
    ffd_parts = first_fit_decreasing(tokens, budget)
    print(f"\nmicro-batches of {len(tokens)} sequences, budget {budget:.0f} tokens: (parts, max/min tokens)")
    print(f"  partition_by_budget: {len(kk_parts)}, {imbalance_ratio(tokens, kk_parts):.4f}")
    print(f"  first-fit-decreasing: {len(ffd_parts)}, {imbalance_ratio(tokens, ffd_parts):.4f}")


if __name__ == "__main__":
    main()
