"""Pieces shared by the pipelines: role groups, checkpoint directories, data loading, seeding."""

import json
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from roll.config.pipeline import JobConfig
from roll.config.worker import WorkerConfig
from roll.data.io import load_rows
from roll.data.tokenizer import load_tokenizer
from roll.distributed.batch import Batch
from roll.distributed.resource_manager import ResourceManager, RolePlacement
from roll.ops import balanced_partition, imbalance_ratio, sequence_workload
from roll.utils.logging import get_logger
from roll.utils.tracking import MetricsTracker

logger = get_logger(__name__)

DRIVER_STATE = "driver_state.json"


def seed_everything(seed: int) -> None:
    """Seed the driver's Python, NumPy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cluster_has_gpus() -> bool:
    """True when the Ray cluster offers GPUs (roles then get one GPU per device id)."""
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def due(step: int, every: int, last_step: int) -> bool:
    """Whether a periodic action (every `every` steps, 0 = never) runs at `step`; the last step always."""
    return (every > 0 and step % every == 0) or step == last_step


def balance_over_dp(batch: Batch, dp: int) -> tuple[Optional[list[list[int]]], dict[str, float]]:
    """DP shards of equal count balanced by sequence workload, and the max/min workload ratio of the
    contiguous split (before) and of the balanced one (after); (None, {}) when dp == 1."""
    if dp == 1:
        return None, {}
    workloads = sequence_workload(batch.attention_mask.sum(-1).numpy())
    naive = [list(range(r * len(batch) // dp, (r + 1) * len(batch) // dp)) for r in range(dp)]
    shards = balanced_partition(workloads, dp, equal_size=True)
    return shards, {
        "balance/imbalance_before": imbalance_ratio(workloads, naive),
        "balance/imbalance_after": imbalance_ratio(workloads, shards),
    }


def stop_token_ids(tokenizer, stops: list[str]) -> list[int]:
    """The tokenizer's EOS id plus the id of each `generation.stop` string (each must be one token:
    the engines stop on token ids)."""
    ids = [int(tokenizer.eos_token_id)] if tokenizer.eos_token_id is not None else []
    for text in stops:
        encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise ValueError(
                f"generation.stop entry {text!r} is {len(encoded)} tokens; only single-token stop strings "
                "are supported, use generation.stop_token_ids for others"
            )
        ids.append(int(encoded[0]))
    return ids


def make_resource_manager(roles: dict[str, Optional[WorkerConfig]]) -> ResourceManager:
    """One placement group covering every device id used by the given roles."""
    placements = [RolePlacement(name, cfg.device_mapping) for name, cfg in roles.items() if cfg is not None]
    return ResourceManager(placements, use_gpu=cluster_has_gpus())


def load_split(path: Optional[str], what: str) -> list[dict[str, Any]]:
    """Rows of a jsonl/parquet file, logging how many were skipped and why."""
    if not path:
        return []
    rows, stats = load_rows(path)
    skipped = {k: v for k, v in stats.items() if k != "rows" and v}
    logger.info("%s: %d rows from %s%s", what, len(rows), path, f" (skipped {skipped})" if skipped else "")
    return rows


def checkpoint_root(cfg: JobConfig) -> Path:
    """`<output_dir>/checkpoints`."""
    return Path(cfg.output_dir) / "checkpoints"


def step_dir(cfg: JobConfig, step: int) -> Path:
    """Directory of the checkpoint taken after `step` steps."""
    return checkpoint_root(cfg) / f"step_{step:06d}"


def latest_checkpoint(cfg: JobConfig) -> Optional[Path]:
    """The newest complete checkpoint (its driver state is written last), or None."""
    root = checkpoint_root(cfg)
    if not root.is_dir():
        return None
    complete = sorted(p for p in root.glob("step_*") if (p / DRIVER_STATE).is_file())
    return complete[-1] if complete else None


def resume_from(cfg: JobConfig, resume: bool) -> tuple[Optional[Path], dict[str, Any]]:
    """(checkpoint dir, driver state) to resume from, or (None, {}) for a fresh start."""
    if not resume:
        return None, {}
    latest = latest_checkpoint(cfg)
    if latest is None:
        logger.info("--resume: no checkpoint under %s, starting from step 0", checkpoint_root(cfg))
        return None, {}
    logger.info("resuming from %s", latest)
    return latest, json.loads((latest / DRIVER_STATE).read_text())


def with_checkpoint(worker: WorkerConfig, checkpoint: Optional[Path], role: str) -> WorkerConfig:
    """The role's config, loading its shard of `checkpoint/<role>` when resuming."""
    return worker if checkpoint is None else replace(worker, checkpoint_dir=str(checkpoint / role))


def write_driver_state(directory: Path, state: dict[str, Any]) -> None:
    """Write the driver's state last: its presence marks the checkpoint complete."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (DRIVER_STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    tmp.replace(directory / DRIVER_STATE)


@dataclass
class JobStart:
    """What every pipeline sets up before its workers: resume point, tokenizer and datasets."""

    checkpoint: Optional[Path]
    """Checkpoint directory to resume from, or None."""
    state: dict[str, Any]
    """The driver state saved with that checkpoint ({} for a fresh start)."""
    tokenizer: Any
    """The HF tokenizer (data.tokenizer_path, else actor_train.model_path)."""
    train_data: Any
    """Training dataset, its cursor restored when resuming."""
    val_data: Any
    """Held-out dataset (not shuffled); may be empty."""

    @property
    def start_step(self) -> int:
        """Steps already done (0 for a fresh start)."""
        return int(self.state.get("step", 0))


def start_job(cfg: JobConfig, resume: bool, dataset_cls: Optional[type]) -> JobStart:
    """Seed, find the resume point, load the tokenizer and the train/val splits as `dataset_cls`
    (None: the job reads no data files, e.g. agentic episodes come from environments)."""
    seed_everything(cfg.seed)
    checkpoint, state = resume_from(cfg, resume)
    tokenizer = load_tokenizer(cfg.data.tokenizer_path or cfg.actor_train.model_path)
    if dataset_cls is None:
        return JobStart(checkpoint, state, tokenizer, None, None)
    train_data = dataset_cls(load_split(cfg.data.train_path, "train"), tokenizer, cfg.data, seed=cfg.seed)
    val_data = dataset_cls(load_split(cfg.data.val_path, "val"), tokenizer, replace(cfg.data, shuffle=False))
    if len(train_data) == 0:
        raise ValueError(f"data.train_path={cfg.data.train_path!r} has no usable rows: {train_data.stats}")
    if "data" in state:
        train_data.load_state_dict(state["data"])
    return JobStart(checkpoint, state, tokenizer, train_data, val_data)


def open_tracker(cfg: JobConfig, resume: bool, start_step: int) -> MetricsTracker:
    """metrics.jsonl + TensorBoard; a resumed run drops what was logged after its checkpoint."""
    tracker = MetricsTracker(cfg.output_dir, tensorboard=cfg.tensorboard, resume=resume)
    if resume:
        tracker.truncate_from(start_step + 1)
    return tracker
