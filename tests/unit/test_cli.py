"""The `roll` command line, run as a real subprocess (`python -m roll`), plus its entry-point import."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from roll.cli import CliError, _import_entry_point, format_plan
from roll.config.loader import load_config

REPO = Path(__file__).resolve().parents[2]
GRPO = "configs/quickstart/rlvr_grpo.yaml"


def _roll(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "roll", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_validate_prints_resolved_yaml_with_overrides():
    result = _roll(
        "train",
        GRPO,
        "actor_train.micro_batch_size=4",
        "generation.num_samples=4",
        "algorithm.mini_batch_size=32",
        "--validate",
    )
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["actor_train"]["micro_batch_size"] == 4
    assert printed["generation"]["num_samples"] == 4
    # Interpolations are resolved in the printed config.
    assert printed["actor_infer"]["model_path"] == printed["actor_train"]["model_path"]


def test_validate_bad_config_is_one_line_and_exit_2():
    result = _roll("train", GRPO, "actor_train.tensor_parallel=3", "--validate")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: actor_train: tensor_parallel(3) x pipeline_parallel(1) = 3 does not divide the 1 GPUs in "
        "device_mapping; use a multiple of 3 devices or smaller parallel sizes"
    ]


def test_unknown_key_exit_2_with_suggestion():
    result = _roll("train", GRPO, "--validate", "algorithm.clip_ratio_hihg=0.3")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "did you mean 'algorithm.clip_ratio_high'?" in result.stderr


def test_plan_prints_each_role():
    result = _roll("plan", "configs/cluster/qwen2.5-72b_ppo_64gpu.yaml")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()}
    # role strategy devices n TP PP VPP CP EP DP micro
    assert rows["actor_train"][2:10] == ["0-63", "64", "8", "4", "5", "1", "1", "2"]
    assert rows["actor_infer"][1] == "sglang" and rows["actor_infer"][9] == "8"
    assert rows["critic"][9] == "2"


def test_format_plan_counts_optimizer_steps():
    cfg = load_config(
        str(REPO / GRPO),
        ["rollout_batch_size=16", "algorithm.mini_batch_size=32", "actor_train.micro_batch_size=8"],
    )
    # 16 prompts x 8 samples = 128 responses in mini-batches of 32.
    assert "128 responses, 4 optimizer step(s) of 32 responses" in format_plan(cfg)


def test_format_plan_of_an_agentic_job_counts_episodes_and_env_workers():
    cfg = load_config(str(REPO / "configs/agentic/countdown.yaml"))
    plan = format_plan(cfg)
    assert "environment: 4 CPU worker(s) x up to 64 episodes at once; envs countdown" in plan
    # 32 seed groups x 8 samples = 256 episodes in mini-batches of 64.
    assert "256 episodes, 4 optimizer step(s) of 64 episodes" in plan


def test_missing_entry_point_module_is_a_one_line_error():
    with pytest.raises(CliError, match="cannot import roll.pipelines.no_such_pipeline"):
        _import_entry_point("roll.pipelines.no_such_pipeline:run")
    with pytest.raises(CliError, match="roll.config.errors has no function run"):
        _import_entry_point("roll.config.errors:run")


def test_usage_errors_exit_2():
    result = _roll("convert", "hf-to-mcore", "--out", "x")
    assert result.returncode == 2
    assert "--hf" in result.stderr


def test_format_plan_reports_engine_replicas():
    cfg = load_config(str(REPO / "configs/cluster/qwen2.5-32b_grpo_32gpu.yaml"))
    # 16 rollout GPUs in TP4 groups: the dispatch sees 4 replicas.
    assert "actor_infer: 4 engine replica(s) of tensor_parallel 4" in format_plan(cfg)
