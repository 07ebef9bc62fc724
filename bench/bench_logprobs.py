"""Benchmark: per-token log-prob + entropy, fused/chunked `logprobs_from_logits` vs naive torch.

    python bench/bench_logprobs.py                 # CPU: chunked torch vs naive, N=4096, V=32000
    python bench/bench_logprobs.py --device cuda   # GPU: Triton vs naive, N=8192, V=151936, bf16

Naive = full fp32 log_softmax + gather + entropy from the materialised softmax. Each variant runs
forward-only and forward+backward (loss = sum(w1 * logp) + sum(w2 * entropy)). CPU peak extra
memory is the growth of the peak RSS (VmHWM, reset via /proc/self/clear_refs) over the RSS once
the inputs exist, each variant in a fresh subprocess; times are medians of repeats run
interleaved in this process (wall and process CPU time). GPU uses
torch.cuda.max_memory_allocated. The GPU run also times a device-to-device copy to get the
card's achievable bandwidth and reports the time to read the logits once at that rate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from roll.kernels.logprobs import logprobs_from_logits  # noqa: E402

VARIANTS = ("naive", "fused")
MODES = ("fwd", "fwd+bwd")


def naive_logprobs_entropy(logits: torch.Tensor, labels: torch.Tensor, temperature: float):
    logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)
    logp = logp_all.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return logp, -(logp_all.exp() * logp_all).sum(-1)


def fused_logprobs_entropy(logits: torch.Tensor, labels: torch.Tensor, temperature: float):
    return logprobs_from_logits(logits, labels, temperature, return_entropy=True)


def make_inputs(n: int, v: int, dtype: torch.dtype, device: str):
    gen = torch.Generator(device=device).manual_seed(0)
    logits = (torch.randn(n, v, generator=gen, device=device) * 2).to(dtype)
    labels = torch.randint(0, v, (n,), generator=gen, device=device)
    w1, w2 = torch.randn(n, device=device), torch.randn(n, device=device)
    return logits, labels, w1, w2


def run_once(variant: str, mode: str, logits, labels, w1, w2) -> None:
    fn = naive_logprobs_entropy if variant == "naive" else fused_logprobs_entropy
    if mode == "fwd":
        with torch.no_grad():
            fn(logits, labels, 0.9)
        return
    x = logits.detach().requires_grad_(True)
    logp, ent = fn(x, labels, 0.9)
    ((logp * w1).sum() + (ent * w2).sum()).backward()


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def cpu_peak_worker(variant: str, mode: str, n: int, v: int) -> dict:
    """Runs in its own process: growth of the peak RSS during one call over the RSS before it."""
    inputs = make_inputs(n, v, torch.float32, "cpu")
    # Linux: writing 5 to clear_refs resets the peak-RSS mark (VmHWM) to the current RSS.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_kib("VmRSS")
    run_once(variant, mode, *inputs)
    return {"peak_extra_mib": (_status_kib("VmHWM") - base) / 1024}


def bench_cpu(n: int, v: int, repeats: int) -> None:
    logits_mib = n * v * 4 / 2**20
    print(
        f"CPU  N={n} V={v} fp32 logits ({logits_mib:.0f} MiB), T=0.9, torch threads={torch.get_num_threads()}"
    )
    print(
        "  time: median of interleaved repeats; wall and process CPU time (CPU time is robust to other load)"
    )
    inputs = make_inputs(n, v, torch.float32, "cpu")
    for mode in MODES:
        peak, wall, cpu = {}, {k: [] for k in VARIANTS}, {k: [] for k in VARIANTS}
        for variant in VARIANTS:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                variant,
                "--mode",
                mode,
                "--n",
                str(n),
                "--v",
                str(v),
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            peak[variant] = json.loads(out.strip().splitlines()[-1])["peak_extra_mib"]
            run_once(variant, mode, *inputs)  # warm-up
        for _ in range(repeats):
            for variant in VARIANTS:
                wall0, cpu0 = time.perf_counter(), time.process_time()
                run_once(variant, mode, *inputs)
                wall[variant].append(time.perf_counter() - wall0)
                cpu[variant].append(time.process_time() - cpu0)
        med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in VARIANTS}
        for variant in VARIANTS:
            w, c = med[variant]
            print(
                f"  {mode:8s} {variant:6s} wall {w * 1e3:8.1f} ms  cpu {c * 1e3:8.1f} ms  "
                f"peak extra {peak[variant]:8.1f} MiB"
            )
        (w_n, c_n), (w_f, c_f) = med["naive"], med["fused"]
        print(
            f"  {mode:8s} fused/naive: wall x{w_f / w_n:.2f}, cpu x{c_f / c_n:.2f}, "
            f"peak extra memory x{peak['fused'] / peak['naive']:.3f}"
        )


def _cuda_time(fn, repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def _copy_time(tensor: torch.Tensor, repeats: int) -> float:
    scratch = torch.empty_like(tensor)
    return _cuda_time(lambda: scratch.copy_(tensor), repeats)


def bench_cuda(n: int, v: int, repeats: int) -> None:
    inputs = make_inputs(n, v, torch.bfloat16, "cuda")
    logits = inputs[0]
    nbytes = logits.numel() * logits.element_size()
    bandwidth = 2 * nbytes / _copy_time(logits, repeats)  # a copy reads and writes every byte
    read_floor = nbytes / bandwidth
    print(f"CUDA {torch.cuda.get_device_name()} N={n} V={v} bf16 logits ({nbytes / 2**30:.2f} GiB)")
    print(f"  copy bandwidth {bandwidth / 1e9:.0f} GB/s -> read-logits-once floor {read_floor * 1e3:.3f} ms")
    for mode in MODES:
        res = {}
        for variant in VARIANTS:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            run_once(variant, mode, *inputs)
            torch.cuda.synchronize()
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
            elapsed = _cuda_time(lambda variant=variant, mode=mode: run_once(variant, mode, *inputs), repeats)
            res[variant] = (elapsed, peak)
            print(f"  {mode:8s} {variant:6s} time {elapsed * 1e3:9.3f} ms   peak extra {peak:9.1f} MiB")
        (t_naive, m_naive), (t_fused, m_fused) = res["naive"], res["fused"]
        print(
            f"  {mode:8s} naive/fused time x{t_naive / t_fused:.1f}, fused/read-floor x{t_fused / read_floor:.2f}, "
            f"fused/naive peak memory x{m_fused / m_naive:.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--n", type=int, default=None, help="rows (tokens); default 4096 CPU, 8192 CUDA")
    parser.add_argument("--v", type=int, default=None, help="vocab; default 32000 CPU, 151936 CUDA")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats; default 5 CPU, 20 CUDA")
    parser.add_argument("--threads", type=int, default=None, help="CPU: torch threads (default: torch's)")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(cpu_peak_worker(args.worker, args.mode, args.n, args.v)))
    elif args.device == "cpu":
        bench_cpu(args.n or 4096, args.v or 32000, args.repeats or 5)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device visible to torch")
        bench_cuda(args.n or 8192, args.v or 151936, args.repeats or 20)


if __name__ == "__main__":
    main()
