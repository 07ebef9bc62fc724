"""Agentic RL: multi-turn episodes in environments as the rollout source of the RLVR update path.

    roll train configs/agentic/guess_number.yaml [key=value ...] [--resume]

Per step, `EnvRollout.collect` draws `rollout_batch_size` groups; a group is one env (round-robin
over `environment.envs`) and one seed, played `generation.num_samples` times (same initial state,
so the group baseline of GRPO = StarPO, or GiGPO, compares like with like). Environment workers
play the episodes against actor_infer turn by turn (roll/strategies/env_rollout.py); each
trajectory becomes one Batch row whose `response_mask` covers only the policy's tokens. From there
the step is RLVR's: reference, old log-probs, advantages, actor update, weight sync, checkpoints.

Validation plays `environment.val_episodes` held-out seeds per env (disjoint from training seeds),
greedy and, with `environment.val_sampled`, sampled; `val/success_rate` is the greedy one.
"""

import hashlib
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from roll.config.environment import EnvSpec
from roll.config.errors import ConfigError
from roll.config.pipeline import JobConfig
from roll.distributed.batch import Batch
from roll.distributed.ray_runtime import RayRuntime
from roll.distributed.worker_group import WorkerGroup
from roll.envs.base import check_reset_result, check_step_result
from roll.envs.registry import ENVS
from roll.pipelines import common
from roll.pipelines.rlvr import RLVRPipeline
from roll.pipelines.rollout import padded_token_rows
from roll.strategies.engine import SamplingParams, sampling_params_from_config
from roll.strategies.env_rollout import TERMINATIONS, EpisodeSpec, Trajectory
from roll.utils.logging import get_logger
from roll.utils.tracking import PhaseTimer
from workers.environment import EnvironmentWorker

logger = get_logger(__name__)

# Training seeds lie below this bound, held-out seeds from it upwards: the two never meet.
VAL_SEED_BASE = 2**30


def training_seed(job_seed: int, step: int, group: int) -> int:
    """The initial-state seed of group `group` at `step`: a pure function, so resume replays it."""
    digest = hashlib.sha256(f"{job_seed}:{step}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % VAL_SEED_BASE


def check_env_contract(spec: EnvSpec) -> None:
    """Build the env once on the driver, reset it and take one (empty) step, checking the returned
    types, so a broken env fails before any worker starts: one ConfigError line naming the env."""
    try:
        env = ENVS.build(spec.type, spec.args)
        try:
            observation, _ = check_reset_result(spec.name, env.reset(0))
            check_step_result(spec.name, env.step(""))
        finally:
            close = getattr(env, "close", None)
            if callable(close):
                close()
    except Exception as err:  # user env code: any failure is reported as a config error naming the env
        raise ConfigError(
            f"env {spec.name!r} failed its start-up check: {type(err).__name__}: {err}"
        ) from None
    if not observation:
        raise ConfigError(
            f"env {spec.name!r}: reset(seed) returned an empty observation; the policy needs a prompt"
        )


def trajectories_to_batch(trajectories: list[Trajectory], pad_id: int) -> Batch:
    """One right-padded row per trajectory, plus the per-turn tensors GiGPO reads.

    `step_state_ids` (B, K) numbers the distinct state keys of the batch (-1 = no such turn); only
    equality matters, within a group."""
    rows = padded_token_rows(
        [t.ids for t in trajectories],
        [t.response_mask for t in trajectories],
        [t.logprobs for t in trajectories],
        pad_id,
    )
    size, width = rows["input_ids"].shape
    turns = max(1, max(t.num_turns for t in trajectories))
    turn_index = torch.full((size, width), -1, dtype=torch.int64)
    step_rewards = torch.zeros(size, turns, dtype=torch.float32)
    step_state_ids = torch.full((size, turns), -1, dtype=torch.int64)
    state_ids: dict[str, int] = {}
    for row, traj in enumerate(trajectories):
        turn_index[row, : len(traj.ids)] = torch.tensor(traj.turn_index, dtype=torch.int64)
        step_rewards[row, : traj.num_turns] = torch.tensor(traj.step_rewards, dtype=torch.float32)
        for k, state in enumerate(traj.step_states):
            step_state_ids[row, k] = state_ids.setdefault(state, len(state_ids))
    return Batch.from_dict(
        {
            **rows,
            "turn_index": turn_index,
            "step_rewards": step_rewards,
            "step_state_ids": step_state_ids,
            "scores": torch.tensor([t.reward for t in trajectories], dtype=torch.float32),
            "group_index": torch.tensor([t.spec.group for t in trajectories], dtype=torch.int64),
            "prompt_lengths": torch.tensor([t.prompt_length for t in trajectories], dtype=torch.int64),
            "response_lengths": torch.tensor([t.generated_tokens for t in trajectories], dtype=torch.int64),
            "env": np.array([t.spec.env for t in trajectories], dtype=object),
            "termination": np.array([t.termination for t in trajectories], dtype=object),
        }
    )


def episode_metrics(trajectories: list[Trajectory], prefix: str) -> dict[str, float]:
    """Success rate, reward, turns, invalid actions, tool calls and termination reasons, overall and
    per env (`{prefix}env/<name>/...`)."""
    metrics = _summary(trajectories, prefix)
    by_env: dict[str, list[Trajectory]] = defaultdict(list)
    for traj in trajectories:
        by_env[traj.spec.env].append(traj)
    if len(by_env) > 1:
        for name, group in by_env.items():
            metrics.update(_summary(group, f"{prefix}env/{name}/"))
    return metrics


def _summary(trajectories: list[Trajectory], prefix: str) -> dict[str, float]:
    count = len(trajectories)
    turns = sum(t.num_turns for t in trajectories)
    env_steps = max(1, turns - sum(t.tool_calls for t in trajectories))
    reasons = Counter(t.termination for t in trajectories)
    metrics = {
        f"{prefix}success_rate": sum(t.success for t in trajectories) / count,
        f"{prefix}reward_mean": float(np.mean([t.reward for t in trajectories])),
        f"{prefix}turns_mean": turns / count,
        f"{prefix}invalid_action_rate": sum(t.invalid_actions for t in trajectories) / env_steps,
        f"{prefix}tool_calls_mean": sum(t.tool_calls for t in trajectories) / count,
    }
    metrics.update({f"{prefix}termination/{reason}": reasons[reason] / count for reason in TERMINATIONS})
    return metrics


class EnvRollout:
    """The agentic rollout source: environment workers play episodes against actor_infer."""

    dataset = None

    def __init__(self, cfg: JobConfig, job: common.JobStart, actor_infer: WorkerGroup) -> None:
        assert cfg.environment is not None, "validate_job guarantees an environment section"
        self.cfg, self.env_cfg = cfg, cfg.environment
        self.tokenizer = job.tokenizer
        for spec in self.env_cfg.envs:
            check_env_contract(spec)
        stop_ids = common.stop_token_ids(self.tokenizer, cfg.generation.stop)
        self.sampling = sampling_params_from_config(cfg.generation, extra_stop_token_ids=stop_ids)
        self.workers = WorkerGroup(
            "environment",
            EnvironmentWorker,
            self.env_cfg,
            None,
            list(range(self.env_cfg.num_workers)),
            timeouts=cfg.timeouts,
            tokenizer_path=cfg.data.tokenizer_path or cfg.actor_train.model_path,
            infer=actor_infer,
        )
        self.groups = [self.workers]

    def collect(self, step: int, timer: PhaseTimer) -> tuple[Batch, dict[str, float]]:
        """Play this step's groups; one Batch row per trajectory, scores = trajectory rewards."""
        names = [spec.name for spec in self.env_cfg.envs]
        episodes = []
        for group in range(self.cfg.rollout_batch_size):
            # Round-robin over envs continues across steps, so every env is trained on even when the
            # groups per step are fewer than the envs.
            env = names[((step - 1) * self.cfg.rollout_batch_size + group) % len(names)]
            seed = training_seed(self.cfg.seed, step, group)
            episodes += [
                EpisodeSpec(env=env, seed=seed, group=group, sample=s)
                for s in range(self.cfg.generation.num_samples)
            ]
        with timer.phase("rollout"):
            trajectories = self.play(episodes, self.sampling, f"train{step}")
        batch = trajectories_to_batch(trajectories, self.tokenizer.pad_token_id)
        metrics = episode_metrics(trajectories, "episode/")
        lengths = batch.tensors["response_lengths"].float()
        metrics.update(
            {
                "reward/mean": float(batch.scores.mean()),
                "reward/std": float(batch.scores.std()) if len(batch) > 1 else 0.0,
                "response_length/mean": float(lengths.mean()),
                "response_length/sum": float(lengths.sum()),
                "trajectory_length/mean": float(batch.attention_mask.sum(-1).float().mean()),
            }
        )
        return batch, metrics

    def play(self, episodes: list[EpisodeSpec], sampling: SamplingParams, tag: str) -> list[Trajectory]:
        """Spread episodes over the environment workers by whole groups; trajectories in episode order."""
        workers = self.workers.workers
        groups = sorted({e.group for e in episodes})
        bounds = np.linspace(0, len(groups), len(workers) + 1).astype(int)
        refs, ranks = [], []
        for rank, worker in enumerate(workers):
            mine = set(groups[bounds[rank] : bounds[rank + 1]])
            part = [e for e in episodes if e.group in mine]
            if part:
                refs.append(worker.run_episodes.remote(part, sampling, tag))
                ranks.append(rank)
        played = [traj for part in self.workers.wait(refs, ranks, call="run_episodes") for traj in part]
        order = {(t.spec.group, t.spec.sample): t for t in played}
        return [order[(e.group, e.sample)] for e in episodes]

    def validate(self) -> dict[str, float]:
        """Held-out seeds per env: greedy success rate (val/success_rate) and, if asked, sampled."""
        episodes = [
            EpisodeSpec(
                env=spec.name, seed=VAL_SEED_BASE + i, group=g * self.env_cfg.val_episodes + i, sample=0
            )
            for g, spec in enumerate(self.env_cfg.envs)
            for i in range(self.env_cfg.val_episodes)
        ]
        greedy = replace(self.sampling, temperature=0.0)
        played = self.play(episodes, greedy, "val")
        metrics = episode_metrics(played, "val/")
        # One greedy episode per env in the log shows what the policy actually does.
        for spec in self.env_cfg.envs:
            traj = next(t for t in played if t.spec.env == spec.name)
            text = self.tokenizer.decode(traj.ids, skip_special_tokens=True)
            logger.info(
                "val episode (%s, seed %d, %s, reward %.2f):\n%s",
                spec.name,
                traj.spec.seed,
                traj.termination,
                traj.reward,
                text if len(text) <= 2000 else text[:2000] + " ...",
            )
        if self.env_cfg.val_sampled:
            sampled = episode_metrics(self.play(episodes, self.sampling, "valsample"), "val_sampled/")
            metrics.update({k: v for k, v in sampled.items() if "termination/" not in k})
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """Nothing: seeds are a function of (seed, step, group)."""
        return {}

    def close(self) -> None:
        """Close the env instances of every worker."""
        self.workers.call("close")


def run(cfg: JobConfig, *, resume: bool = False) -> dict[str, Any]:
    """Entry point of `roll train` for pipeline=agentic."""
    with RayRuntime(cfg.ray_address):
        return RLVRPipeline(cfg, resume=resume, source=EnvRollout).run()
