"""End-to-end agentic RL: the agentic quickstart at reduced size (teacher SFT -> multi-turn GRPO through
Ray environment workers, Megatron on gloo and the native engine), and exact resume of an agentic run.

- The quickstart prints `held-out success rate: <before> -> <after>` and logs episode metrics every step.
- A run stopped after its step-2 checkpoint and resumed to step 4 logs the same step 3-4 metrics as an
  uninterrupted 4-step run: seeds are a function of (seed, step, group) and sampling streams of the
  request ids, so the resumed run replays the same episodes with the same weights.
"""

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import REPO, read_metrics, roll_train_command, run_roll, start_roll, stop_run

SEED = 3
QUICK = ["--sft-steps", "150", "--rl-steps", "4", "--teacher-episodes", "1500"]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("agentic_quickstart")
    log = out / "quickstart.log"
    process = start_roll(
        [
            sys.executable,
            str(REPO / "launch/quickstart_agentic.py"),
            "--out",
            str(out),
            "--seed",
            str(SEED),
            *QUICK,
        ],
        log,
    )
    try:
        returncode = process.wait(timeout=600)
    except subprocess.TimeoutExpired:
        returncode = None
    finally:
        stop_run(process)
    text = log.read_text()
    assert returncode == 0, f"agentic quickstart exited with {returncode}; log tail:\n{text[-4000:]}"
    return out, text


def test_agentic_quickstart_prints_success_rates_and_episode_metrics(quickstart):
    out, text = quickstart
    last = text.strip().splitlines()[-1]
    match = re.fullmatch(r"held-out success rate: (\d\.\d{3}) -> (\d\.\d{3})", last)
    assert match, f"unexpected last line {last!r}"
    metrics = read_metrics(out / "rl")
    assert sorted(metrics) == [0, 1, 2, 3, 4]
    for step in (1, 2, 3, 4):
        row = metrics[step]
        assert 0.0 <= row["episode/success_rate"] <= 1.0 and 1.0 <= row["episode/turns_mean"] <= 4.0
        assert row["episode/termination/env_error"] == 0.0 and row["time/rollout"] > 0
        assert sum(v for k, v in row.items() if k.startswith("episode/termination/")) == pytest.approx(1.0)
    assert float(match.group(1)) == pytest.approx(metrics[0]["val/success_rate"], abs=1e-3)
    assert float(match.group(2)) == pytest.approx(metrics[4]["val/success_rate"], abs=1e-3)
    assert (out / "rl" / "checkpoints" / "step_000004" / "driver_state.json").is_file()


def test_agentic_run_resumes_exactly(quickstart, tmp_path):
    out, _ = quickstart
    common = [
        f"seed={SEED}",
        "val_every=0",
        "tensorboard=false",
        f"actor_train.model_path={out / 'sft' / 'hf_model'}",
    ]
    config = "configs/agentic/guess_number.yaml"
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_roll(
        roll_train_command(config, [*common, f"output_dir={straight}", "max_steps=4"]), tmp_path / "a.log"
    )
    run_roll(
        roll_train_command(config, [*common, f"output_dir={resumed}", "max_steps=2"]), tmp_path / "b.log"
    )
    run_roll(
        roll_train_command(config, [*common, f"output_dir={resumed}", "max_steps=4"], resume=True),
        tmp_path / "c.log",
    )
    expected, got = read_metrics(straight), read_metrics(resumed)
    for step in (3, 4):
        for key in (
            "reward/mean",
            "episode/turns_mean",
            "response_length/sum",
            "actor/loss",
            "actor/grad_norm",
        ):
            assert got[step][key] == pytest.approx(expected[step][key], rel=1e-6, abs=1e-7), (step, key)


def test_gigpo_trains_through_the_same_update_path(quickstart, tmp_path):
    out, _ = quickstart
    overrides = [
        f"seed={SEED}",
        "val_every=0",
        "tensorboard=false",
        "max_steps=2",
        f"output_dir={tmp_path / 'gigpo'}",
        f"actor_train.model_path={out / 'sft' / 'hf_model'}",
        "algorithm.advantage_estimator=gigpo",
    ]
    run_roll(roll_train_command("configs/agentic/guess_number.yaml", overrides), tmp_path / "gigpo.log")
    metrics = read_metrics(tmp_path / "gigpo")
    for step in (1, 2):
        assert math.isfinite(metrics[step]["actor/loss"]) and metrics[step]["actor/grad_norm"] > 0
        assert math.isfinite(metrics[step]["advantages/mean"])
