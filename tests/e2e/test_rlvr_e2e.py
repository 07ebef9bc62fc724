"""End-to-end RLVR through `roll train` (Ray workers, Megatron on gloo, native engine) on the tiny task.

- GRPO from the briefly SFT'd policy: with fixed seeds, the training reward of the last steps is
  clearly above that of the first steps (the exact-answer reward teaches the carries the noisy
  SFT teacher got wrong).
- The PPO quickstart config (critic + GAE, KL to a frozen reference in the reward) runs a few steps
  and logs finite critic metrics every step.
"""

import math
from pathlib import Path

from e2e_support import SEED, TinyTask, read_metrics, roll_train_command, run_roll

GRPO_STEPS = 200
WINDOW = 20
MIN_RISE = 0.1
PPO_STEPS = 3


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_grpo_raises_training_reward(tiny_task: TinyTask, sft_model: Path, tmp_path: Path):
    out = tmp_path / "grpo"
    overrides = [
        f"seed={SEED}",
        f"output_dir={out}",
        f"max_steps={GRPO_STEPS}",
        "val_every=0",
        "tensorboard=false",
        "generation.max_new_tokens=4",
        f"actor_train.model_path={sft_model}",
        "actor_train.optimizer.lr=3e-4",
        *tiny_task.data_overrides(),
    ]
    run_roll(roll_train_command("configs/quickstart/rlvr_grpo.yaml", overrides), tmp_path / "grpo.log")

    metrics = read_metrics(out)
    rewards = [metrics[step]["reward/mean"] for step in range(1, GRPO_STEPS + 1)]
    first, last = mean(rewards[:WINDOW]), mean(rewards[-WINDOW:])
    assert 0.0 < first < 0.9, f"the SFT policy should be right sometimes, not always: {first:.3f}"
    assert last > first + MIN_RISE, f"reward did not rise: first {WINDOW} steps {first:.3f}, last {last:.3f}"


def test_ppo_quickstart_config_trains_critic(tiny_task: TinyTask, sft_model: Path, tmp_path: Path):
    out = tmp_path / "ppo"
    overrides = [
        f"seed={SEED}",
        f"output_dir={out}",
        f"max_steps={PPO_STEPS}",
        "val_every=0",
        "tensorboard=false",
        f"actor_train.model_path={sft_model}",
        *tiny_task.data_overrides(),
    ]
    run_roll(roll_train_command("configs/quickstart/rlvr_ppo.yaml", overrides), tmp_path / "ppo.log")

    metrics = read_metrics(out)
    assert sorted(metrics) == list(range(1, PPO_STEPS + 1))
    for step, row in metrics.items():
        for name in ("critic/vf_loss", "critic/grad_norm", "actor/pg_loss", "time/values", "time/reference"):
            assert math.isfinite(row[name]), f"step {step}: {name}={row[name]}"
        assert row["critic/optimizer_steps"] >= 1
    # The value head learns: its mean prediction moves between steps.
    assert len({row["critic/vpred_mean"] for row in metrics.values()}) == PPO_STEPS
    final = out / "checkpoints" / f"step_{PPO_STEPS:06d}"
    assert (final / "critic").is_dir() and (final / "driver_state.json").is_file()
