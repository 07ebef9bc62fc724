"""Tests for launch/: every script parses (`bash -n`, shellcheck when installed), opens with its help
comment and strict mode, refuses bad invocations with a usage or one-line error, and the shared
helpers build the expected `ray start` flags. Nothing here starts Ray."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch"
SCRIPTS = sorted([*LAUNCH.glob("*.sh"), *LAUNCH.glob("*.sbatch")])
QUICKSTART_CONFIG = "configs/quickstart/rlvr_grpo.yaml"


def _run(args: list[str], env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    merged = {**os.environ, "ROLL_VENV": str(Path(sys.executable).parent.parent), **(env or {})}
    return subprocess.run(args, cwd=ROOT, env=merged, capture_output=True, text=True, timeout=60, **kwargs)


def test_launch_scripts_exist():
    names = {path.name for path in SCRIPTS}
    assert {
        "single_node.sh",
        "ray_head.sh",
        "ray_worker.sh",
        "submit.sh",
        "slurm.sbatch",
        "common.sh",
    } <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_script_parses_and_opens_with_help_and_strict_mode(script):
    assert _run(["bash", "-n", str(script)]).returncode == 0
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    header = []
    for line in lines[1:]:
        if not line.startswith("#") or line.startswith("#SBATCH"):
            break
        header.append(line)
    text = [line for line in header if line.strip("# ")]
    assert len(text) >= 2, f"{script.name}: the opening comment should say what it does and how to run it"
    assert "set -euo pipefail" in lines


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_script_is_shellcheck_clean(script):
    result = _run(["shellcheck", "-x", "-s", "bash", f"launch/{script.name}"])
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["launch/single_node.sh"],
        ["launch/single_node.sh", "--help"],
        ["launch/ray_worker.sh"],
        ["launch/ray_head.sh", "x"],
    ],
)
def test_bad_invocation_prints_the_header_as_usage_and_exits_2(args):
    result = _run(["bash", *args])
    assert result.returncode == 2
    assert result.stdout == ""
    first_comment_line = (ROOT / args[0]).read_text().splitlines()[1].removeprefix("# ")
    assert result.stderr.splitlines()[0] == first_comment_line


def test_single_node_rejects_a_missing_config_in_one_line():
    result = _run(["bash", "launch/single_node.sh", "no/such.yaml"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: config file 'no/such.yaml' not found; pass a YAML path such as configs/quickstart/rlvr_grpo.yaml"
    ]


def test_single_node_runs_roll_train_locally_even_with_ray_address_set():
    env = {"ROLL_SKIP_SETUP": "1", "RAY_ADDRESS": "10.1.2.3:6379"}
    result = _run(["bash", "launch/single_node.sh", QUICKSTART_CONFIG, "max_steps=3", "--validate"], env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "ray_address: null" in lines and "max_steps: 3" in lines
    assert "ignoring RAY_ADDRESS=10.1.2.3:6379" in result.stderr
    # An explicit override on the command line still wins over the script's ray_address=null.
    result = _run(
        ["bash", "launch/single_node.sh", QUICKSTART_CONFIG, "ray_address=10.0.0.9:6379", "--validate"],
        env=env,
    )
    assert "ray_address: 10.0.0.9:6379" in result.stdout.splitlines()


def test_submit_needs_ray_address_and_a_token(tmp_path):
    env = {"RAY_ADDRESS": "", "HOME": str(tmp_path), "RAY_AUTH_TOKEN": "", "RAY_AUTH_MODE": ""}
    result = _run(["bash", "launch/submit.sh", QUICKSTART_CONFIG], env=env)
    assert result.returncode == 2 and result.stderr.startswith("error: RAY_ADDRESS is not set")
    env["RAY_ADDRESS"] = "http://127.0.0.1:1"
    result = _run(["bash", "launch/submit.sh", QUICKSTART_CONFIG], env=env)
    assert result.returncode == 2 and result.stderr.startswith("error: no Ray auth token on this node")


def test_slurm_script_refuses_to_run_outside_a_slurm_job():
    env = {"SLURM_JOB_ID": "", "ROLL_ROOT": str(ROOT)}
    result = _run(["bash", "launch/slurm.sbatch", QUICKSTART_CONFIG], env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("error: not inside a Slurm job; submit with: sbatch launch/slurm.sbatch")


def _common(snippet: str, env: dict[str, str]) -> list[str]:
    base = {"ROLL_NUM_GPUS": "", "ROLL_NUM_CPUS": "", "ROLL_OBJECT_STORE_BYTES": "", "ROLL_RAY_BLOCK": ""}
    base["ROLL_RAY_ARGS"] = ""
    result = _run(["bash", "-c", f'ROOT="$PWD"; source launch/common.sh; {snippet}'], env={**base, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_gpu_count_follows_override_then_visible_devices():
    assert _common("roll_num_gpus", {"CUDA_VISIBLE_DEVICES": "0,1,3"}) == ["3"]
    assert _common("roll_num_gpus", {"CUDA_VISIBLE_DEVICES": "0,1,3", "ROLL_NUM_GPUS": "8"}) == ["8"]


def test_ray_start_flags_from_the_environment():
    env = {
        "ROLL_NODE_IP": "10.0.0.5",
        "ROLL_NUM_GPUS": "4",
        "ROLL_NUM_CPUS": "32",
        "ROLL_OBJECT_STORE_BYTES": str(64 << 30),
        "ROLL_RAY_BLOCK": "1",
        "ROLL_RAY_ARGS": "--temp-dir=/scratch/ray  --min-worker-port=20000",
    }
    flags = _common('roll_ray_start_args; printf "%s\\n" "${ROLL_RAY_START_ARGS[@]}"', env)
    assert flags == [
        "--node-ip-address=10.0.0.5",
        "--num-gpus=4",
        "--disable-usage-stats",
        "--num-cpus=32",
        f"--object-store-memory={64 << 30}",
        "--block",
        "--temp-dir=/scratch/ray",
        "--min-worker-port=20000",
    ]
    # An empty CUDA_VISIBLE_DEVICES means no GPU, whatever the machine has.
    defaults = {"ROLL_NODE_IP": "1.2.3.4", "CUDA_VISIBLE_DEVICES": ""}
    flags = _common('roll_ray_start_args; printf "%s\\n" "${ROLL_RAY_START_ARGS[@]}"', defaults)
    assert flags == ["--node-ip-address=1.2.3.4", "--num-gpus=0", "--disable-usage-stats"]
