"""Helpers of the end-to-end tests: the tiny addition task on disk, running `roll` as a subprocess in
its own session (and stopping everything in that session), and reading metrics.jsonl.

The task uses single-digit operands (`7+8=` -> `15`): a ~50k-parameter model learns its format and
most sums within a few hundred SFT steps, so RL runs start from a policy with non-trivial,
imperfect accuracy within seconds on CPU.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from roll.data.synthetic import build_char_tokenizer, write_quickstart_data
from roll.models.tiny import save_tiny_hf_model

REPO = Path(__file__).resolve().parents[2]
SEED = 7
TINY_MODEL = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=1,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=False,
)
TASK_SIZES = {"train_sft": 8000, "train_rl": 2000, "val": 64}
SFT_STEPS = 300
RUN_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class TinyTask:
    """Paths of the session's task: jsonl splits and the random base model (with tokenizer files)."""

    data: Path
    base_model: Path

    def data_overrides(self) -> list[str]:
        """Dotted overrides pointing a quickstart config at this task's RL data."""
        return [f"data.train_path={self.data / 'train_rl.jsonl'}", f"data.val_path={self.data / 'val.jsonl'}"]


def make_tiny_task(root: Path) -> TinyTask:
    """Write the single-digit task's splits, a char tokenizer and a random tiny Qwen2 under `root`."""
    write_quickstart_data(root / "data", SEED, sizes=TASK_SIZES, num_digits=1)
    tokenizer = build_char_tokenizer(root / "tokenizer")
    base = save_tiny_hf_model("qwen2", root / "base_model", seed=SEED, **TINY_MODEL)
    for item in tokenizer.iterdir():
        shutil.copy(item, base / item.name)
    return TinyTask(data=root / "data", base_model=base)


def read_metrics(output_dir: Path) -> dict[int, dict[str, float]]:
    """metrics.jsonl of a run as {step: {name: value}}."""
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    return {row["step"]: row for row in map(json.loads, lines)}


def roll_train_command(config: str, overrides: list[str], *, resume: bool = False) -> list[str]:
    """`python -m roll train CONFIG overrides... [--resume]` with this interpreter."""
    return [sys.executable, "-m", "roll", "train", str(REPO / config), *overrides] + (
        ["--resume"] if resume else []
    )


def start_roll(command: list[str], log: Path) -> subprocess.Popen:
    """Start a `roll` command in a new session (its own process group), output appended to `log`."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "ROLL_PROGRESS": "0"}
    with log.open("ab") as sink:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )


def session_processes(session_id: int) -> list[int]:
    """Live (non-zombie) pids whose session id is `session_id` (field 6 of /proc/PID/stat)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, _ppid, _pgrp, session = stat[stat.rindex(")") + 2 :].split()[:4]
        if int(session) == session_id and state != "Z":
            pids.append(int(entry.name))
    return pids


def stop_run(process: subprocess.Popen, grace_s: float = 30.0) -> list[int]:
    """SIGKILL the run's process group, wait for the rest of its session to exit, SIGKILL stragglers.

    The driver's process group holds it and the Ray daemons it started (gcs, raylet); Ray workers
    move to process groups of their own but stay in the session that `start_roll` created, which
    belongs to this run alone. Returns the pids that had to be killed after the grace period.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + grace_s
    while session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    stragglers = session_processes(process.pid)
    for pid in stragglers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return stragglers


def run_roll(command: list[str], log: Path, timeout_s: float = RUN_TIMEOUT_S) -> None:
    """Run a `roll` command to completion (failing with its log tail), then clear its session."""
    process = start_roll(command, log)
    try:
        returncode = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        returncode = None
    finally:
        stop_run(process)
    if returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited with {returncode}; log tail:\n{log.read_text()[-4000:]}"
        )


def run_sft(task: TinyTask, output_dir: Path, steps: int) -> Path:
    """SFT the task's base model for `steps` steps (configs/quickstart/sft.yaml); the exported HF dir."""
    overrides = [
        f"seed={SEED}",
        f"output_dir={output_dir}",
        f"max_steps={steps}",
        "val_every=0",
        "log_every=10",
        "tensorboard=false",
        f"actor_train.model_path={task.base_model}",
        "actor_train.optimizer.warmup_steps=20",
        f"data.train_path={task.data / 'train_sft.jsonl'}",
        f"data.val_path={task.data / 'val.jsonl'}",
    ]
    run_roll(roll_train_command("configs/quickstart/sft.yaml", overrides), output_dir / "run.log")
    return output_dir / "hf_model"
