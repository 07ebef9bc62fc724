"""SFT pipeline: prompt/completion (or chat) demonstrations, loss on completion tokens only.

Same Megatron strategy and actor worker as RL. Each step trains on `train_batch_size` samples
(balanced over DP ranks); validation reports the held-out token NLL; the final weights are
exported as an HF checkpoint in `<output_dir>/hf_model` (the next pipeline's `model_path`).

    roll train configs/quickstart/sft.yaml [key=value ...] [--resume]
"""

from pathlib import Path
from typing import Any

from roll.config.pipeline import JobConfig
from roll.data.datasets import SFTDataset, collate_sft
from roll.distributed.batch import Batch
from roll.distributed.ray_runtime import RayRuntime
from roll.distributed.worker_group import WorkerGroup
from roll.pipelines import common
from roll.pipelines.rollout import MODEL_INPUT_KEYS
from roll.utils.logging import get_logger
from roll.utils.tracking import PhaseTimer, step_progress
from workers.actor import ActorWorker

logger = get_logger(__name__)


class SFTPipeline:
    """Builds the actor_train group for a JobConfig and runs supervised fine-tuning."""

    def __init__(self, cfg: JobConfig, *, resume: bool = False) -> None:
        self.cfg = cfg
        job = common.start_job(cfg, resume, SFTDataset)
        checkpoint, self.start_step = job.checkpoint, job.start_step
        self.tokenizer, self.train_data, self.val_data = job.tokenizer, job.train_data, job.val_data
        self.resources = common.make_resource_manager({"actor_train": cfg.actor_train})
        self.actor_train = WorkerGroup(
            "actor_train",
            ActorWorker,
            common.with_checkpoint(cfg.actor_train, checkpoint, "actor_train"),
            self.resources,
            cfg.actor_train.device_mapping,
            timeouts=cfg.timeouts,
            algorithm=cfg.algorithm,
            seed=cfg.seed,
            lr_decay_steps=cfg.max_steps,
        )
        self.tracker = common.open_tracker(cfg, resume, self.start_step)

    def run(self) -> dict[str, Any]:
        """Train for cfg.max_steps, export the HF model; returns {"val_nll", "hf_model", "last_metrics"}."""
        cfg = self.cfg
        metrics: dict[str, Any] = {}
        with step_progress(cfg.max_steps, initial=self.start_step, desc="sft") as progress:
            for step in range(self.start_step + 1, cfg.max_steps + 1):
                metrics = self.step(step)
                if cfg.val_every and common.due(step, cfg.val_every, cfg.max_steps):
                    metrics.update(self.validate())
                if common.due(step, cfg.save_every, cfg.max_steps):
                    self.save(step)
                if common.due(step, cfg.log_every, cfg.max_steps):
                    self.tracker.log(step, metrics)
                progress.advance(metrics)
        hf_dir = Path(cfg.output_dir) / "hf_model"
        self.actor_train.call("export_hf", str(hf_dir))
        logger.info("SFT model exported to %s", hf_dir)
        self.tracker.close()
        return {"val_nll": metrics.get("val/nll"), "hf_model": str(hf_dir), "last_metrics": metrics}

    def step(self, step: int) -> dict[str, Any]:
        """One optimizer step on the next `train_batch_size` demonstrations."""
        timer = PhaseTimer()
        with timer.phase("train"):
            batch = Batch.from_dict(
                collate_sft(self.train_data.next_batch(self.cfg.train_batch_size), self.pad_id)
            )
            dp = self.actor_train.dp_size
            shards, _ = common.balance_over_dp(batch, dp)
            metrics = self.actor_train.dispatch_dp(
                "train_sft",
                batch,
                shards=shards,
                collect=False,
                mini_batch_size=len(batch) // dp,
                seed=self.cfg.seed + step,
            )[0]
        metrics.update(timer.metrics())
        metrics["throughput/tokens_per_s"] = float(batch["attention_mask"].sum()) / max(
            metrics["time/train"], 1e-9
        )
        return metrics

    @property
    def pad_id(self) -> int:
        """Padding token id of the tokenizer."""
        return self.tokenizer.pad_token_id

    def validate(self) -> dict[str, float]:
        """Token-mean NLL of the held-out completions under the current weights."""
        count = min(self.cfg.val_max_samples, len(self.val_data))
        if count == 0:
            return {}
        dp = self.actor_train.dp_size
        batch = Batch.from_dict(collate_sft([self.val_data[i] for i in range(count)], self.pad_id))
        padded, _ = batch.select_keys(MODEL_INPUT_KEYS).pad_to_multiple(dp)
        log_probs = self.actor_train.dispatch_dp("compute_log_probs", padded, key="log_probs")["log_probs"]
        log_probs = log_probs[: len(batch)]
        mask = batch["response_mask"]
        return {"val/nll": float(-(log_probs * mask).sum() / mask.sum())}

    def save(self, step: int) -> None:
        """Checkpoint actor_train, then the driver state (which marks the checkpoint complete)."""
        directory = common.step_dir(self.cfg, step)
        self.actor_train.call("save_checkpoint", str(directory / "actor_train"), step)
        common.write_driver_state(directory, {"step": step, "data": self.train_data.state_dict()})


def run(cfg: JobConfig, *, resume: bool = False) -> dict[str, Any]:
    """Entry point of `roll train` for pipeline=sft."""
    with RayRuntime(cfg.ray_address):
        return SFTPipeline(cfg, resume=resume).run()
