"""Benchmark of the GAE reverse scan (not a test): roll.ops.gae (C++ in roll._C, rows across
threads; CUDA with --device cuda) against the torch reverse loop over T, on (B, T) float32.

Run from the repository root:  python bench/bench_gae.py [--batch 256] [--length 2048] [--device cpu]
"""

import argparse
import time

import torch

from roll.ops import gae
from roll.ops._extension import cpu_extension, cuda_extension
from roll.ops.gae_scan import gae_reference


def best_seconds(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    extension = cuda_extension() if device.type == "cuda" else cpu_extension()
    if extension is None:
        raise SystemExit(
            f"the compiled GAE for {device.type} is not built: run `python setup.py build_ext --inplace`"
        )

    generator = torch.Generator().manual_seed(0)
    rewards = torch.randn(args.batch, args.length, generator=generator).to(device)
    values = torch.randn(args.batch, args.length, generator=generator).to(device)
    # Multi-turn style mask: action spans separated by env-token spans, then right padding.
    mask = (torch.rand(args.batch, args.length, generator=generator) > 0.2).float().to(device)
    gamma, lam = 0.99, 0.95

    compiled = best_seconds(lambda: gae(rewards, values, mask, gamma, lam), args.repeats, device)
    loop = best_seconds(
        lambda: gae_reference(rewards, values, mask, gamma, lam), max(3, args.repeats // 3), device
    )
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    expected_adv, expected_ret = gae_reference(rewards, values, mask, gamma, lam)
    max_diff = max(
        (advantages - expected_adv).abs().max().item(), (returns - expected_ret).abs().max().item()
    )

    print(
        f"GAE on ({args.batch}, {args.length}) float32, {device.type}, torch threads {torch.get_num_threads()}"
    )
    print(f"{'implementation':>28} {'ms':>9} {'speed-up':>9}")
    print(f"{'torch reverse loop over T':>28} {loop * 1e3:9.2f} {1.0:8.1f}x")
    print(f"{'roll.ops.gae (compiled)':>28} {compiled * 1e3:9.2f} {loop / compiled:8.1f}x")
    if device.type == "cpu":
        arrays = [x.numpy() for x in (rewards, values, mask)]
        single = best_seconds(lambda: extension.gae(*arrays, gamma, lam, max_threads=1), args.repeats, device)
        print(f"{'roll._C.gae, 1 thread':>28} {single * 1e3:9.2f} {loop / single:8.1f}x")
    print(f"max |compiled - loop| = {max_diff:.2e}")


if __name__ == "__main__":
    main()
