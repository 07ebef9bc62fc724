"""Actor worker (policy training, and the frozen reference) and critic worker, over Megatron-Core.

Thin Ray shells around `MegatronTrainStrategy`: the reference is an actor whose WorkerConfig has no
optimizer; the critic is the same strategy with a value head and the critic loss.
"""

import time
from typing import Any

import torch

from roll.algorithms.loss_fns import make_actor_loss_fn, make_critic_loss_fn, make_sft_loss_fn
from roll.config.algorithm import AlgorithmConfig
from roll.config.worker import WorkerConfig
from roll.distributed.batch import Batch
from roll.distributed.weight_sync import WeightSyncMember, join_group, member_of, rendezvous_endpoint
from roll.platform import current_device, init_distributed
from roll.strategies.megatron_train import MegatronTrainStrategy
from roll.strategies.minibatch import train_mini_batches
from roll.utils.logging import get_logger
from workers.base import set_rank_env

logger = get_logger(__name__)

_NO_SYNC = {"sync/tensors": 0.0, "sync/bytes": 0.0, "sync/buckets": 0.0, "time/sync_send": 0.0}


class MegatronRole:
    """Distributed set-up and the calls shared by actor and critic (checkpoints, parallel layout)."""

    is_critic = False

    def __init__(
        self,
        config: WorkerConfig,
        *,
        algorithm: AlgorithmConfig,
        seed: int = 0,
        lr_decay_steps: int | None = None,
        rank: int,
        world_size: int,
        master_addr: str,
        master_port: int,
    ) -> None:
        self.config = config
        self.rank = rank
        set_rank_env(rank, world_size, master_addr, master_port)
        init_distributed()
        self.algorithm = algorithm
        self.strategy = MegatronTrainStrategy(
            config, seed=seed, is_critic=self.is_critic, lr_decay_steps=lr_decay_steps
        )
        self.strategy.initialize()

    def parallel_info(self) -> dict[str, Any]:
        """dp_rank / dp_size / is_output (and tp/pp ranks) of this rank, from Megatron's layout."""
        return self.strategy.parallel_info()

    def resume_point(self) -> tuple[int, dict] | None:
        """(step, extra) of the checkpoint loaded at start-up from config.checkpoint_dir, if any."""
        return self.strategy.resume_point

    def save_checkpoint(self, directory: str, step: int, extra: dict | None = None) -> None:
        """Sharded model + optimizer + scheduler + RNG + step (every rank writes its shard)."""
        self.strategy.save_checkpoint(directory, step, extra or {})

    def export_hf(self, directory: str) -> None:
        """Write the current weights as an HF checkpoint (safetensors + config)."""
        self.strategy.export_hf(directory)


class ActorWorker(MegatronRole):
    """Policy: log-probs (old or reference), PPO-style updates, weight sync to the rollout engines."""

    def __init__(self, config: WorkerConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.weight_sync_groups: dict[str, WeightSyncMember] = {}
        """Weight-sync groups this rank sends in, by name (built by the driver at the first sync)."""

    def compute_log_probs(
        self, batch: Batch, *, key: str = "old_log_probs", temperature: float = 1.0
    ) -> Batch:
        """(B, S) log-probs of the batch's tokens under the current weights, stored as `key`."""
        out = self.strategy.compute_log_probs(batch, temperature=temperature, return_entropy=False)
        return Batch.from_dict({key: out["log_probs"]})

    def train(
        self,
        batch: Batch,
        *,
        mini_batch_size: int,
        epochs: int,
        kl_coef: float,
        seed: int,
        temperature: float,
    ) -> dict[str, float]:
        """Policy update over this DP rank's shard; returns mean metrics prefixed `actor/`."""
        loss_fn = make_actor_loss_fn(self.algorithm, kl_coef_getter=lambda: kl_coef)
        metrics = train_mini_batches(
            lambda mb: self.strategy.train_step(mb, loss_fn, temperature=temperature),
            batch,
            mini_batch_size=mini_batch_size,
            epochs=epochs,
            seed=seed,
        )
        return {f"actor/{name}": value for name, value in metrics.items()}

    def train_sft(self, batch: Batch, *, mini_batch_size: int, seed: int) -> dict[str, float]:
        """Supervised update (NLL on response_mask tokens) over this DP rank's shard; `sft/` metrics."""
        loss_fn = make_sft_loss_fn()
        metrics = train_mini_batches(
            lambda mb: self.strategy.train_step(mb, loss_fn),
            batch,
            mini_batch_size=mini_batch_size,
            epochs=1,
            seed=seed,
        )
        return {f"sft/{name}": value for name, value in metrics.items()}

    def sync_weights(self, infer_workers: list, bucket_bytes: int) -> dict[str, float]:
        """Object-store weight sync (the fallback transport): send HF-named weights of this PP stage to
        every rollout engine as lists of CPU tensors in buckets of ~bucket_bytes.

        Every TP rank of DP replica 0 takes part (the TP gather is collective); TP rank 0 sends.
        """
        import ray

        start = time.perf_counter()
        info = self.parallel_info()
        if info["dp_rank"] != 0:
            return dict(_NO_SYNC)
        sender = info["tp_rank"] == 0
        bucket: list[tuple[str, torch.Tensor]] = []
        sent_tensors = sent_bytes = sent_buckets = bucket_size = 0

        def flush() -> None:
            nonlocal bucket, bucket_size, sent_buckets
            if bucket:
                ref = ray.put(bucket)
                ray.get([worker.update_weights.remote(ref) for worker in infer_workers])
                sent_buckets += 1
            bucket, bucket_size = [], 0

        for name, tensor in self.strategy.iter_hf_weights():
            if not sender:
                continue
            tensor = tensor.detach().to("cpu", copy=True).contiguous()
            size = tensor.numel() * tensor.element_size()
            bucket.append((name, tensor))
            bucket_size += size
            sent_tensors += 1
            sent_bytes += size
            if bucket_size >= bucket_bytes:
                flush()
        if not sender:
            return dict(_NO_SYNC)
        flush()
        return {
            "sync/tensors": float(sent_tensors),
            "sync/bytes": float(sent_bytes),
            "sync/buckets": float(sent_buckets),
            "time/sync_send": time.perf_counter() - start,
        }

    # ---- collective weight sync (roll/distributed/weight_sync.py) -------------------------------

    def weight_sync_endpoint(self) -> tuple[str, int, str]:
        """(listen address, free port, backend) for a weight-sync group rendezvous hosted here."""
        return rendezvous_endpoint(current_device())

    def join_weight_sync(self, name: str, **member_args: Any) -> None:
        """Join weight-sync group `name` as a sender (blocks until every member has joined)."""
        join_group(self.weight_sync_groups, name, device=current_device(), **member_args)

    def sync_weights_collective(self, name: str, sources: list[int], bucket_bytes: int) -> dict[str, float]:
        """One collective sync: the senders of group `name` broadcast their PP stage in the order of
        `sources` (group ranks); returns this rank's sync/* metrics (zero unless it sends).

        Every TP rank of DP replica 0 runs the TP gather of its stage; TP rank 0 is the sender. A
        sender takes part in the other stages' broadcasts too (a broadcast spans the whole group).
        """
        start = time.perf_counter()
        info = self.parallel_info()
        if info["dp_rank"] != 0:
            return dict(_NO_SYNC)
        if info["tp_rank"] != 0:
            for _ in self.strategy.iter_hf_weights():
                pass
            return dict(_NO_SYNC)
        member = member_of(self.weight_sync_groups, name)
        metrics = dict(_NO_SYNC)
        for src in sources:
            if src == member.rank:
                metrics = member.send(self.strategy.iter_hf_weights(), bucket_bytes)
            else:
                member.receive(src)
        metrics["time/sync_send"] = time.perf_counter() - start
        return metrics


class CriticWorker(MegatronRole):
    """Value model: per-token values and clipped value-loss updates."""

    is_critic = True

    def compute_values(self, batch: Batch) -> Batch:
        """(B, S) values V(prefix before token i) as `values`."""
        return Batch.from_dict({"values": self.strategy.compute_values(batch)["values"]})

    def train(self, batch: Batch, *, mini_batch_size: int, epochs: int, seed: int) -> dict[str, float]:
        """Value update over this DP rank's shard; returns mean metrics prefixed `critic/`."""
        loss_fn = make_critic_loss_fn(self.algorithm)
        metrics = train_mini_batches(
            lambda mb: self.strategy.train_step(mb, loss_fn),
            batch,
            mini_batch_size=mini_batch_size,
            epochs=epochs,
            seed=seed,
        )
        return {f"critic/{name}": value for name, value in metrics.items()}
