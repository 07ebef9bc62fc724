"""Benchmark: group advantage (GRPO) from scores to the (B, T) response-masked tensor.

    python bench/bench_group_advantage.py                 # CPU: torch reference vs algorithms' version
    python bench/bench_group_advantage.py --device cuda   # GPU: Triton kernel vs both torch versions

`roll.algorithms.advantages.compute_grpo_outcome_advantage` is the peer-style plain torch
(unique + index_add + broadcast multiply); `group_advantage_torch` is this package's reference;
on CUDA `group_advantage` runs the one-launch Triton kernel. Times are medians of interleaved repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from roll.algorithms.advantages import compute_grpo_outcome_advantage  # noqa: E402
from roll.kernels.group_advantage import group_advantage, group_advantage_torch  # noqa: E402


def _timed(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=int, default=4096, help="responses B")
    parser.add_argument("--group-size", type=int, default=8, help="responses per prompt")
    parser.add_argument("--width", type=int, default=4096, help="tokens per response T")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to torch")
    gen = torch.Generator(device=device).manual_seed(0)
    scores = torch.randn(args.batch, device=device, generator=gen)
    group_index = torch.randperm(args.batch, device=device, generator=gen) // args.group_size
    mask = (torch.rand(args.batch, args.width, device=device, generator=gen) > 0.3).float()
    variants = {
        "algorithms (torch)": lambda: compute_grpo_outcome_advantage(scores, mask, group_index),
        "kernels torch reference": lambda: group_advantage_torch(scores, mask, group_index),
    }
    if device == "cuda":
        variants["kernels triton"] = lambda: group_advantage(scores, mask, group_index)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        fn()  # warm-up (Triton compiles here)
    for _ in range(args.repeats):
        for name, fn in variants.items():
            times[name].append(_timed(fn, device))
    print(
        f"{device} B={args.batch} group size={args.group_size} T={args.width} threads={torch.get_num_threads()}"
    )
    baseline = statistics.median(times["algorithms (torch)"])
    for name, samples in times.items():
        med = statistics.median(samples)
        print(f"  {name:26s} {med * 1e3:8.3f} ms   x{baseline / med:.2f} vs algorithms")


if __name__ == "__main__":
    main()
