"""`roll train ... --resume` after a SIGKILL continues exactly where the checkpoint left off.

Run A trains uninterrupted. Run B is the same command, killed (SIGKILL to its whole process group)
right after its first checkpoint is complete, then restarted with `--resume`. With fixed seeds on
CPU, every logged metric except wall-clock timings must equal run A's, step by step: that holds
only if model, optimizer, LR schedule, data cursor, RNG, KL coefficient and the rollout engine's
weights are all restored.
"""

import math
import signal
import time
from pathlib import Path

import pytest
from e2e_support import SEED, TinyTask, read_metrics, roll_train_command, run_roll, start_roll, stop_run

MAX_STEPS = 12
SAVE_EVERY = 2
# Wall-clock measurements differ between any two runs; everything else must not.
TIMING_PREFIXES = ("time/", "throughput/")
# Two fresh runs occasionally differ by a few float32 ulps in reported means (actor/loss, entropy:
# seen at step 1, before any kill) while rewards, grad norms and weights stay bit-identical; a
# mis-restored state moves metrics by orders of magnitude more.
REL_TOL, ABS_TOL = 1e-6, 1e-6


def rlvr_overrides(task: TinyTask, policy: Path, output_dir: Path) -> list[str]:
    return [
        f"seed={SEED}",
        f"output_dir={output_dir}",
        f"max_steps={MAX_STEPS}",
        f"save_every={SAVE_EVERY}",
        "val_every=3",
        "val_max_samples=8",
        "tensorboard=false",
        "rollout_batch_size=4",
        "generation.num_samples=4",
        "generation.max_new_tokens=4",
        # Two optimizer steps per RL step, at a high learning rate: a mis-restored Adam state or
        # LR schedule would change the weights visibly.
        "algorithm.mini_batch_size=8",
        "actor_train.micro_batch_size=4",
        f"actor_train.model_path={policy}",
        "actor_train.optimizer.lr=1e-3",
        *task.data_overrides(),
    ]


def wait_for(path: Path, process, log: Path, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(
                f"run exited with {process.returncode} before writing {path}; log tail:\n{log_tail(log)}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"{path} did not appear within {timeout_s:.0f}s; log tail:\n{log_tail(log)}")
        time.sleep(0.01)


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


def complete_checkpoints(output_dir: Path) -> dict[str, int]:
    """{checkpoint dir name: mtime_ns of its driver_state.json} of the complete checkpoints."""
    marks = sorted((output_dir / "checkpoints").glob("step_*/driver_state.json"))
    return {mark.parent.name: mark.stat().st_mtime_ns for mark in marks}


def test_resume_after_kill_matches_uninterrupted_run(tiny_task: TinyTask, sft_model: Path, tmp_path: Path):
    config = "configs/quickstart/rlvr_grpo.yaml"
    out_a, out_b = tmp_path / "uninterrupted", tmp_path / "killed"
    run_roll(roll_train_command(config, rlvr_overrides(tiny_task, sft_model, out_a)), tmp_path / "a.log")

    command_b = roll_train_command(config, rlvr_overrides(tiny_task, sft_model, out_b))
    killed = start_roll(command_b, tmp_path / "b.log")
    try:
        wait_for(
            out_b / "checkpoints" / f"step_{SAVE_EVERY:06d}" / "driver_state.json", killed, tmp_path / "b.log"
        )
    finally:
        stragglers = stop_run(killed)
    assert killed.returncode == -signal.SIGKILL
    assert not stragglers, f"processes of the killed run outlived its Ray instance: {stragglers}"
    saved_before_kill = complete_checkpoints(out_b)
    assert f"step_{MAX_STEPS:06d}" not in saved_before_kill, "the run finished before it was killed"
    resume = roll_train_command(config, rlvr_overrides(tiny_task, sft_model, out_b), resume=True)
    run_roll(resume, tmp_path / "b.log")
    # A resume that silently restarted from step 0 would reproduce run A too, but rewrite these.
    saved_after_resume = complete_checkpoints(out_b)
    rewritten = [name for name, mtime in saved_before_kill.items() if saved_after_resume[name] != mtime]
    assert not rewritten, f"--resume redid checkpointed steps {rewritten} instead of continuing after them"
    assert f"step_{MAX_STEPS:06d}" in saved_after_resume

    lines_b = (out_b / "metrics.jsonl").read_text().splitlines()
    metrics_a, metrics_b = read_metrics(out_a), read_metrics(out_b)
    assert len(lines_b) == len(metrics_b), "a step was logged twice after resuming"
    assert sorted(metrics_b) == sorted(metrics_a) == list(range(MAX_STEPS + 1))
    for step in range(MAX_STEPS + 1):
        row_a, row_b = metrics_a[step], metrics_b[step]
        compared = sorted(k for k in row_a if not k.startswith(TIMING_PREFIXES))
        assert compared == sorted(k for k in row_b if not k.startswith(TIMING_PREFIXES)), step
        for name in compared:
            assert math.isclose(row_a[name], row_b[name], rel_tol=REL_TOL, abs_tol=ABS_TOL), (
                f"step {step} {name}: uninterrupted {row_a[name]!r} != resumed {row_b[name]!r}"
            )
    # The killed run must really have learned something for the comparison to mean anything.
    assert any(abs(metrics_a[s]["actor/pg_loss"]) > 0 for s in range(1, MAX_STEPS + 1))
