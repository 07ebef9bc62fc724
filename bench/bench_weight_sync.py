"""Benchmark of weight sync actor_train -> actor_infer (not a test): the collective transport (gloo
weight-update group, flat buckets, double-buffered) side by side with the Ray object-store fallback.

A random ~110M-parameter Qwen2 (hidden 768, 12 layers, vocab 32000, tied embeddings, fp32 ~0.44 GB)
is loaded by one Megatron trainer rank (TP1, frozen: no optimizer) and by `--engines` native engine
replicas, all on a local Ray cluster on 127.0.0.1. Each transport syncs once to warm up (the
collective one builds its group then), then `--repeats` times; the figures are the best sync time,
the model bytes per second (GB/s; every engine receives them all) and the ratio of the two times.

Run from the repository root:  python bench/bench_weight_sync.py [--engines 2] [--repeats 3] [--bucket-mb 64]
"""

import argparse
import tempfile
import time
from pathlib import Path

from roll.config.algorithm import AlgorithmConfig
from roll.config.worker import WorkerConfig
from roll.distributed.ray_runtime import RayRuntime
from roll.distributed.resource_manager import ResourceManager, RolePlacement
from roll.distributed.weight_sync import make_weight_sync
from roll.distributed.worker_group import WorkerGroup
from roll.models.tiny import save_tiny_hf_model
from workers.actor import ActorWorker
from workers.infer import InferWorker

MODEL = dict(
    vocab_size=32000,
    hidden_size=768,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_key_value_heads=12,
    tie_word_embeddings=True,
)


def time_syncs(sync, repeats: int) -> tuple[float, dict[str, float]]:
    """(best seconds of `repeats` syncs, metrics of the last) after one warm-up sync."""
    metrics = sync.sync()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        metrics = sync.sync()
        best = min(best, time.perf_counter() - started)
    return best, metrics


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", type=int, default=2, help="engine replicas (1-2 on a 2-core machine)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bucket-mb", type=float, default=64.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, RayRuntime(num_cpus=2):
        model = save_tiny_hf_model("qwen2", Path(tmp) / "model", seed=0, **MODEL)
        devices = list(range(args.engines))
        resources = ResourceManager(
            [RolePlacement("actor_train", [0]), RolePlacement("actor_infer", devices)], use_gpu=False
        )
        train_cfg = WorkerConfig(model_path=str(model), device_mapping=[0], dtype="fp32")
        infer_cfg = WorkerConfig(
            model_path=str(model), strategy={"name": "native"}, dtype="fp32", device_mapping=devices
        )
        trainer = WorkerGroup(
            "actor_train", ActorWorker, train_cfg, resources, [0], algorithm=AlgorithmConfig(), seed=0
        )
        engines = WorkerGroup("actor_infer", InferWorker, infer_cfg, resources, devices, seed=0)
        trainer.wait_ready()
        engines.wait_ready()
        bucket_bytes = int(args.bucket_mb * 2**20)

        results = {}
        for transport in ("object_store", "collective"):
            sync = make_weight_sync(transport, trainer, engines, bucket_bytes=bucket_bytes, timeout_s=300)
            results[transport] = time_syncs(sync, args.repeats)

        size = results["collective"][1]["sync/bytes"]
        tensors = int(results["collective"][1]["sync/tensors"])
        print(
            f"model: {size / 1e9:.3f} GB in {tensors} tensors, 1 sender (TP1) -> {args.engines} engine(s), "
            f"buckets of {args.bucket_mb:g} MiB, best of {args.repeats}"
        )
        print(f"{'transport':<14}{'seconds':>10}{'GB/s':>8}{'buckets':>9}")
        for transport, (seconds, metrics) in results.items():
            print(
                f"{transport:<14}{seconds:>10.3f}{size / 1e9 / seconds:>8.2f}{metrics['sync/buckets']:>9.0f}"
            )
        ratio = results["object_store"][0] / results["collective"][0]
        print(f"collective is {ratio:.2f}x the speed of object_store")
        trainer.kill()
        engines.kill()
        resources.shutdown()


if __name__ == "__main__":
    main()
