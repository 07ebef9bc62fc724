"""RLVR pipeline (GRPO | PPO | REINFORCE++ | RLOO) on role-separated Ray workers, single controller.

One step, top to bottom in `RLVRPipeline.step`:
    rollout source (scored Batch) -> reference log-probs -> old log-probs -> values (PPO)
    -> advantages (driver) -> actor (and critic) updates over mini-batches x epochs
    -> weight sync actor_train -> actor_infer -> metrics; validation and checkpoints every N steps.

The rollout source is the only part that differs between RL pipelines: here `PromptRollout`
(dataset prompts -> actor_infer -> reward role); `pipeline: agentic` plugs in multi-turn episodes
played in environment workers (roll/pipelines/agentic.py) and reuses everything else.

    roll train configs/quickstart/rlvr_grpo.yaml [key=value ...] [--resume]
"""

import math
from dataclasses import replace
from typing import Any, Optional, Protocol

import numpy as np
import torch

from roll.algorithms.advantages import compute_advantages
from roll.algorithms.kl_control import make_kl_controller
from roll.algorithms.stats import masked_mean
from roll.config.cluster import replica_groups
from roll.config.pipeline import JobConfig
from roll.config.worker import WorkerConfig
from roll.data.datasets import PromptDataset
from roll.distributed.batch import Batch
from roll.distributed.ray_runtime import RayRuntime
from roll.distributed.weight_sync import make_weight_sync
from roll.distributed.worker_group import WorkerGroup
from roll.pipelines import common
from roll.pipelines.rollout import MODEL_INPUT_KEYS, make_requests, outputs_to_batch
from roll.strategies.engine import generate_on_replicas, sampling_params_from_config
from roll.utils.logging import get_logger
from roll.utils.tracking import PhaseTimer, phase_progress, step_progress
from workers.actor import ActorWorker, CriticWorker
from workers.infer import InferWorker
from workers.reward import RewardWorker

logger = get_logger(__name__)


# Per-trajectory turn structure that step-level estimators (GiGPO) read, when the source provides it.
STEP_KEYS = ("turn_index", "step_rewards", "step_state_ids")


class RolloutSource(Protocol):
    """Where a step's scored samples come from (prompts + reward role, or environment episodes)."""

    groups: list[WorkerGroup]
    """Role groups the source started (waited for at start-up)."""
    dataset: Optional[type]
    """Dataset class of data.train_path / val_path (class attribute); None loads no data."""

    def collect(self, step: int, timer: PhaseTimer) -> tuple[Batch, dict[str, float]]:
        """This step's Batch (MODEL_INPUT_KEYS, scores, group_index, ...) and its rollout metrics."""
        ...

    def validate(self) -> dict[str, float]:
        """Held-out metrics (val/...) under the current weights."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to resume the source (data cursor)."""
        ...

    def close(self) -> None:
        """Stop the source's processes."""
        ...


class PromptRollout:
    """RLVR's source: dataset prompts -> actor_infer (n samples each) -> rule rewards."""

    dataset = PromptDataset

    def __init__(self, cfg: JobConfig, job: common.JobStart, actor_infer: WorkerGroup) -> None:
        self.cfg = cfg
        self.tokenizer, self.train_data, self.val_data = job.tokenizer, job.train_data, job.val_data
        self.actor_infer = actor_infer
        stop_ids = common.stop_token_ids(self.tokenizer, cfg.generation.stop)
        self.sampling = sampling_params_from_config(cfg.generation, extra_stop_token_ids=stop_ids)
        self.val_sampling = replace(self.sampling, n=1, temperature=0.0)
        self.reward = WorkerGroup("reward", RewardWorker, cfg.reward, None, [0], timeouts=cfg.timeouts)
        self.groups = [self.reward]

    def collect(self, step: int, timer: PhaseTimer) -> tuple[Batch, dict[str, float]]:
        """Generate for the next rollout_batch_size prompts, then score with the reward role."""
        with timer.phase("rollout"):
            items = self.train_data.next_batch(self.cfg.rollout_batch_size)
            requests = make_requests(items, self.sampling, f"train{step}")
            outputs = generate_on_replicas(self.actor_infer, requests)
            batch = outputs_to_batch(items, outputs, self.tokenizer, self.tokenizer.pad_token_id)
        with timer.phase("reward"):
            rewarded = self.reward.call("score", batch.select_keys(["response_text", "answer"]))[0]
            batch["scores"] = rewarded["scores"]
        return batch, self.rollout_metrics(batch, rewarded.meta.get("metrics", {}))

    def validate(self) -> dict[str, float]:
        """Greedy responses on the held-out prompts: mean reward and accuracy (full score)."""
        count = min(self.cfg.val_max_samples, len(self.val_data))
        if count == 0:
            return {}
        items = [self.val_data[i] for i in range(count)]
        outputs = generate_on_replicas(self.actor_infer, make_requests(items, self.val_sampling, "val"))
        batch = outputs_to_batch(items, outputs, self.tokenizer, self.tokenizer.pad_token_id)
        scores = self.reward.call("score", batch.select_keys(["response_text", "answer"]))[0]["scores"]
        full = sum(f.weight for f in self.cfg.reward.functions if f.weight > 0)
        return {
            "val/reward_mean": float(scores.mean()),
            "val/accuracy": float((scores >= full - 1e-6).float().mean()),
            "val/response_length": float(batch.tensors["response_lengths"].float().mean()),
        }

    @staticmethod
    def rollout_metrics(batch: Batch, reward_metrics: dict[str, float]) -> dict[str, float]:
        """Reward, response length and truncation statistics of this step's rollouts."""
        scores = batch["scores"]
        lengths = batch.tensors["response_lengths"].float()
        finish = batch["finish_reason"]
        metrics = {
            "reward/mean": float(scores.mean()),
            "reward/std": float(scores.std()) if len(scores) > 1 else 0.0,
            "reward/max": float(scores.max()),
            "reward/min": float(scores.min()),
            "response_length/mean": float(lengths.mean()),
            "response_length/max": float(lengths.max()),
            "response_length/sum": float(lengths.sum()),
            "response_length/clip_ratio": float(np.mean([reason == "length" for reason in finish])),
        }
        metrics.update({k if "/" in k else f"reward/{k}": float(v) for k, v in reward_metrics.items()})
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """The training data cursor."""
        return {"data": self.train_data.state_dict()}

    def close(self) -> None:
        """Stop the scoring processes."""
        self.reward.call("close")


class RLVRPipeline:
    """Builds the role groups for a JobConfig and runs the RL loop."""

    def __init__(self, cfg: JobConfig, *, resume: bool = False, source: Any = None) -> None:
        """`source` is the rollout source class (default PromptRollout), built as
        `source(cfg, job, actor_infer)` over the dataset class it names in `source.dataset`."""
        self.cfg = cfg
        source = source or PromptRollout
        job = common.start_job(cfg, resume, source.dataset)
        checkpoint, state, self.start_step = job.checkpoint, job.state, job.start_step
        self.kl_ctl = make_kl_controller(cfg.algorithm)
        if "kl_coef" in state:
            self.kl_ctl.value = float(state["kl_coef"])

        responses = cfg.rollout_batch_size * cfg.generation.num_samples
        self.optimizer_steps = (
            cfg.max_steps * cfg.algorithm.ppo_epochs * (responses // cfg.algorithm.mini_batch_size)
        )

        roles: dict[str, Optional[WorkerConfig]] = {
            "actor_train": cfg.actor_train,
            "actor_infer": cfg.actor_infer,
        }
        roles.update(reference=cfg.reference, critic=cfg.critic)
        self.resources = common.make_resource_manager(roles)
        algo, seed = cfg.algorithm, cfg.seed
        self.actor_train = WorkerGroup(
            "actor_train",
            ActorWorker,
            common.with_checkpoint(cfg.actor_train, checkpoint, "actor_train"),
            self.resources,
            cfg.actor_train.device_mapping,
            timeouts=cfg.timeouts,
            algorithm=algo,
            seed=seed,
            lr_decay_steps=self.optimizer_steps,
        )
        self.reference = None
        if cfg.reference is not None:
            self.reference = WorkerGroup(
                "reference",
                ActorWorker,
                cfg.reference,
                self.resources,
                cfg.reference.device_mapping,
                timeouts=cfg.timeouts,
                algorithm=algo,
                seed=seed,
            )
        self.critic = None
        if cfg.critic is not None:
            self.critic = WorkerGroup(
                "critic",
                CriticWorker,
                common.with_checkpoint(cfg.critic, checkpoint, "critic"),
                self.resources,
                cfg.critic.device_mapping,
                timeouts=cfg.timeouts,
                algorithm=algo,
                seed=seed,
                lr_decay_steps=self.optimizer_steps,
            )
        # One rollout worker per engine replica (a TP group of devices), placed on its first device.
        replicas = replica_groups(cfg.actor_infer.device_mapping, cfg.actor_infer.tensor_parallel)
        self.actor_infer = WorkerGroup(
            "actor_infer",
            InferWorker,
            cfg.actor_infer,
            self.resources,
            [group[0] for group in replicas],
            timeouts=cfg.timeouts,
            seed=seed,
        )
        self.rollout: RolloutSource = source(cfg, job, self.actor_infer)
        # Wait for every role to finish starting, so step 1's timings measure the step only.
        for group in (self.actor_train, self.reference, self.critic, self.actor_infer, *self.rollout.groups):
            if group is not None:
                group.wait_ready()
        self.weight_sync = make_weight_sync(
            cfg.weight_sync_transport,
            self.actor_train,
            self.actor_infer,
            bucket_bytes=int(cfg.weight_sync_bucket_mb * 2**20),
            timeout_s=cfg.weight_sync_timeout_s,
        )
        if checkpoint is not None:
            self.sync_weights()
        self.tracker = common.open_tracker(cfg, resume, self.start_step)

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        """Train for cfg.max_steps; returns {"val_before", "val_after", "last_metrics"}."""
        cfg = self.cfg
        summary: dict[str, Any] = {"val_before": None, "val_after": None, "last_metrics": {}}
        if cfg.val_every and self.start_step == 0:
            summary["val_before"] = self.validate()
            self.tracker.log(0, summary["val_before"])
        progress = step_progress(cfg.max_steps, initial=self.start_step, desc="rlvr")
        with progress:
            for step in range(self.start_step + 1, cfg.max_steps + 1):
                metrics = self.step(step)
                if cfg.val_every and common.due(step, cfg.val_every, cfg.max_steps):
                    metrics.update(self.validate())
                    summary["val_after"] = {k: metrics[k] for k in metrics if k.startswith("val/")}
                if common.due(step, cfg.save_every, cfg.max_steps):
                    self.save(step)
                if common.due(step, cfg.log_every, cfg.max_steps):
                    self.tracker.log(step, metrics)
                progress.advance(metrics)
                summary["last_metrics"] = metrics
        self.shutdown()
        return summary

    def step(self, step: int) -> dict[str, Any]:
        """One RL step; returns its metrics."""
        algo = self.cfg.algorithm
        bar = phase_progress(None, "rollout", unit="phase")
        timer = PhaseTimer(bar)
        batch, rollout_metrics = self.rollout.collect(step, timer)
        shards, balance = common.balance_over_dp(batch, self.actor_train.dp_size)
        model_inputs = batch.select_keys(MODEL_INPUT_KEYS)
        temperature = self.logprob_temperature
        if self.reference is not None:
            with timer.phase("reference"):
                ref = self.reference.dispatch_dp(
                    "compute_log_probs", model_inputs, key="ref_log_probs", temperature=temperature
                )
                batch["ref_log_probs"] = ref["ref_log_probs"]
        with timer.phase("old_log_probs"):
            old = self.actor_train.dispatch_dp(
                "compute_log_probs", model_inputs, shards=shards, key="old_log_probs", temperature=temperature
            )
            batch["old_log_probs"] = old["old_log_probs"]
        if self.critic is not None:
            with timer.phase("values"):
                batch["values"] = self.critic.dispatch_dp("compute_values", model_inputs)["values"]
        with timer.phase("advantages"):
            result = compute_advantages(
                algo,
                scores=batch.scores,
                response_mask=batch.response_mask,
                group_index=batch.tensors["group_index"],
                values=batch.values if "values" in batch else None,
                old_log_probs=batch.old_log_probs,
                ref_log_probs=batch.ref_log_probs if "ref_log_probs" in batch else None,
                kl_coef=self.kl_ctl.value,
                **{key: batch.tensors[key] for key in STEP_KEYS if key in batch},
            )
            batch["advantages"], batch["returns"] = result.advantages, result.returns
        train_keys = [*MODEL_INPUT_KEYS, "old_log_probs", "advantages", "returns"]
        train_keys += [k for k in ("ref_log_probs", "values") if k in batch]
        train_batch = batch.select_keys(train_keys)
        metrics: dict[str, Any] = {}
        if self.critic is not None:
            with timer.phase("train_critic"):
                metrics.update(self.train_role(self.critic, train_batch, step, critic=True))
        with timer.phase("train_actor"):
            metrics.update(self.train_role(self.actor_train, train_batch, step, shards=shards))
        with timer.phase("sync"):
            metrics.update(self.sync_weights())
        metrics.update(self.advantage_metrics(batch, result.reward_kl))
        measured_kl = result.reward_kl if result.reward_kl is not None else metrics.get("actor/kl_loss")
        if measured_kl is not None and math.isfinite(float(measured_kl)):
            self.kl_ctl.update(float(measured_kl), len(batch))
        metrics.update(rollout_metrics)
        metrics.update(balance)
        metrics["kl_coef"] = self.kl_ctl.value
        metrics.update(timer.metrics())
        bar.close()
        metrics["throughput/tokens_per_s"] = metrics["response_length/sum"] / max(
            metrics["time/rollout"], 1e-9
        )
        return metrics

    # ------------------------------------------------------------------ phases
    def train_role(
        self, group: WorkerGroup, batch: Batch, step: int, *, critic: bool = False, shards=None
    ) -> dict[str, float]:
        """PPO-style update of actor or critic over this step's batch (DP-sharded)."""
        algo = self.cfg.algorithm
        per_rank = algo.mini_batch_size // group.dp_size
        kwargs: dict[str, Any] = dict(
            mini_batch_size=per_rank, epochs=algo.ppo_epochs, seed=self.cfg.seed + step
        )
        if not critic:
            kwargs.update(kl_coef=self.kl_ctl.value, temperature=self.logprob_temperature)
        results = group.dispatch_dp("train", batch, shards=shards, collect=False, **kwargs)
        return results[0]

    @property
    def logprob_temperature(self) -> float:
        """Temperature the trainer scales logits by: the sampling one (greedy sampling = unscaled),
        matching the engine's log-prob convention (roll/strategies/engine.py)."""
        return self.cfg.generation.temperature or 1.0

    def sync_weights(self) -> dict[str, float]:
        """actor_train's weights -> every rollout engine, as HF-named buckets over the configured
        transport (collective | object_store); sync/* metrics summed over the sending ranks (one per
        PP stage), time/sync_send of the slowest sender."""
        return self.weight_sync.sync()

    def validate(self) -> dict[str, float]:
        """Held-out metrics of the rollout source under the current weights."""
        return self.rollout.validate()

    @staticmethod
    def advantage_metrics(batch: Batch, reward_kl: Optional[torch.Tensor]) -> dict[str, float]:
        """Token means over the response of advantages, returns and (PPO) values; KL in the reward."""
        mask = batch.response_mask
        metrics = {
            f"{key}/mean": float(masked_mean(batch.tensors[key], mask)) for key in ("advantages", "returns")
        }
        if "values" in batch:
            metrics["values/mean"] = float(masked_mean(batch.values, mask))
        if reward_kl is not None:
            metrics["kl/reward_kl"] = float(reward_kl)
        return metrics

    def save(self, step: int) -> None:
        """Checkpoint every trainable role, then the driver state (which marks it complete)."""
        directory = common.step_dir(self.cfg, step)
        self.actor_train.call("save_checkpoint", str(directory / "actor_train"), step)
        if self.critic is not None:
            self.critic.call("save_checkpoint", str(directory / "critic"), step)
        state = {"step": step, **self.rollout.state_dict(), "kl_coef": self.kl_ctl.value}
        common.write_driver_state(directory, state)
        logger.info("checkpoint saved: %s", directory)

    def shutdown(self) -> None:
        """Close the metrics files and stop the rollout source's processes."""
        self.tracker.close()
        self.rollout.close()


def run(cfg: JobConfig, *, resume: bool = False) -> dict[str, Any]:
    """Entry point of `roll train` for pipeline=rlvr."""
    with RayRuntime(cfg.ray_address):
        return RLVRPipeline(cfg, resume=resume).run()
