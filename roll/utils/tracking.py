"""Run observability: per-step metrics (metrics.jsonl + TensorBoard), phase timers, progress bars.

    with (
        MetricsTracker(cfg.output_dir, tensorboard=cfg.tensorboard, resume=resume) as tracker,
        step_progress(cfg.max_steps, initial=start) as bar,
    ):
        tracker.truncate_from(start)          # on resume: drop lines of steps that will be redone
        for step in range(start, cfg.max_steps):
            timer = PhaseTimer()
            with timer.phase("rollout"), phase_progress(n, "generate", unit="sample") as gen_bar:
                ...                           # gen_bar.update(k) as samples finish
            metrics = {**summarize(scores, "reward"), **timer.metrics()}
            metrics["throughput/tokens_per_s"] = num_tokens / metrics["time/step"]
            tracker.log(step, metrics)
            bar.advance(metrics)

`<output_dir>/metrics.jsonl` holds one JSON object per logged step: `{"step": s, <key>: <number>, ...}`,
exactly the logged keys. Torch/numpy scalars become plain numbers. Strict JSON has no NaN or
infinity, so non-finite values are written as the strings "NaN", "Infinity" and "-Infinity"
(`float(value)` reads them back). TensorBoard scalars go to `<output_dir>/tensorboard`.

Progress bars write to stderr and are shown only when stderr is a terminal; `ROLL_PROGRESS=0`
hides them everywhere, `ROLL_PROGRESS=1` forces them on (e.g. to follow a Slurm log file).
"""

import json
import math
import operator
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from tqdm import tqdm

from roll.utils.logging import get_logger

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

logger = get_logger(__name__)

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}
# Shown on the step bar when present in the logged metrics; a pipeline may pass its own keys.
DEFAULT_POSTFIX_KEYS = ("reward/mean", "val/accuracy", "sft/loss", "val/nll", "time/step")


def to_scalar(name: str, value: Any) -> float | int:
    """A plain Python number from a Python/numpy/torch scalar (0-d or one-element), else ValueError."""
    if hasattr(value, "numel") and hasattr(value, "item"):  # torch.Tensor, without importing torch
        if value.numel() != 1:
            raise ValueError(
                f"metric {name!r} is a tensor of shape {tuple(value.shape)}; log scalars "
                f"(reduce it first, e.g. summarize(values, {name!r}))"
            )
        value = value.item()
    elif isinstance(value, (np.generic, np.ndarray)):
        if np.size(value) != 1:
            raise ValueError(
                f"metric {name!r} is an array of shape {np.shape(value)}; log scalars "
                f"(reduce it first, e.g. summarize(values, {name!r}))"
            )
        value = np.asarray(value).reshape(()).item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    raise ValueError(f"metric {name!r} has type {type(value).__name__}; log ints, floats or 0-d tensors")


def _json_number(value: float | int) -> float | int | str:
    if isinstance(value, float) and not math.isfinite(value):
        return _NON_FINITE.get(value, "NaN")
    return value


def _step_number(step: Any) -> int:
    if isinstance(step, bool) or not hasattr(step, "__index__") or operator.index(step) < 0:
        raise ValueError(f"step={step!r} is invalid: steps are ints >= 0")
    return operator.index(step)


def summarize(values: Any, prefix: str) -> dict[str, float]:
    """`{prefix/mean, prefix/std, prefix/max, prefix/min}` of a sequence, array or tensor.

    std is the population std (ddof=0): the spread of exactly these values, 0 for a single one.
    """
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"summarize({prefix!r}): no values to summarize; skip the metric for an empty batch")
    return {
        f"{prefix}/mean": float(array.mean()),
        f"{prefix}/std": float(array.std()),
        f"{prefix}/max": float(array.max()),
        f"{prefix}/min": float(array.min()),
    }


class MetricsTracker:
    """Appends one line per step to `<output_dir>/metrics.jsonl` and mirrors scalars to TensorBoard.

    A fresh run (`resume=False`) starts an empty metrics.jsonl and hides earlier TensorBoard events
    in the same directory. A resumed run keeps earlier lines; `truncate_from(step)` (called
    automatically at the first `log` if not before) drops lines of steps >= the resume step, and
    TensorBoard purges its events from that step, so redone steps are never duplicated.
    """

    def __init__(self, output_dir: str, *, tensorboard: bool = True, resume: bool = False) -> None:
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, METRICS_FILE)
        self.tensorboard_dir = os.path.join(output_dir, TENSORBOARD_DIR) if tensorboard else None
        os.makedirs(output_dir, exist_ok=True)
        if not resume and os.path.exists(self.path) and os.path.getsize(self.path) > 0:
            logger.warning("starting a fresh run: overwriting %s (pass resume=True to keep it)", self.path)
        if not resume:
            open(self.path, "w").close()
        self._writer: Optional[SummaryWriter] = None
        # The step from which TensorBoard hides older events when the writer opens (0: a fresh run).
        self._purge_step: Optional[int] = None if resume else 0
        self._truncated = not resume

    def truncate_from(self, step: int) -> None:
        """Drop metrics.jsonl lines with step >= `step` (and TensorBoard events from `step` on)."""
        step = _step_number(step)
        kept, dropped = [], 0
        text = Path(self.path).read_text(encoding="utf-8") if os.path.exists(self.path) else ""
        for line in filter(None, text.splitlines()):
            try:
                record_step = json.loads(line)["step"]
            except (json.JSONDecodeError, KeyError, TypeError):
                dropped += 1  # a line cut short by a crash mid-write
                continue
            if record_step < step:
                kept.append(line + "\n")
            else:
                dropped += 1
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as target:
            target.writelines(kept)
        os.replace(tmp, self.path)
        if dropped:
            logger.info("resume from step %d: dropped %d line(s) of %s", step, dropped, self.path)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._purge_step = step
        self._truncated = True

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Write `{"step": step, **metrics}` as one flushed line and add each value to TensorBoard."""
        step = _step_number(step)
        if "step" in metrics:
            raise ValueError("metric key 'step' is reserved for the step number; rename the metric")
        values = {str(key): to_scalar(str(key), value) for key, value in metrics.items()}
        if not self._truncated:
            self.truncate_from(step)
        record = {"step": step, **{key: _json_number(value) for key, value in values.items()}}
        # Opened per step so every line is on disk when log() returns, even if the run dies next.
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(json.dumps(record, allow_nan=False) + "\n")
        if self.tensorboard_dir is not None:
            writer = self._tensorboard_writer()
            for key, value in values.items():
                writer.add_scalar(key, value, global_step=step)
            writer.flush()

    def _tensorboard_writer(self) -> "SummaryWriter":
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.tensorboard_dir, purge_step=self._purge_step)
        return self._writer

    def close(self) -> None:
        """Flush and close the TensorBoard writer (idempotent); metrics.jsonl is closed after each line."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "MetricsTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PhaseTimer:
    """Wall time per phase of one step: `time/<phase>` (summed over repeats) and `time/step`.

    `time/step` runs from construction (or the last `reset`) to `metrics()`; nested phases each
    count their own full duration, so phases need not add up to the step. With a `bar` (see
    `phase_progress`), the bar names the running phase and advances as each one ends.
    """

    def __init__(self, bar: Optional[tqdm] = None) -> None:
        self.bar = bar
        self.reset()

    def reset(self) -> None:
        """Start a new step: forget the phase totals and restart the step clock."""
        self._totals: dict[str, float] = defaultdict(float)
        self._step_start = time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the body under `time/<name>`; time spent in repeats of the same phase adds up."""
        if not name or name == "step":
            raise ValueError(f"phase name {name!r} is invalid: give a non-empty name other than 'step'")
        start = time.perf_counter()
        if self.bar is not None:
            self.bar.set_description_str(name, refresh=True)
        try:
            yield
        finally:
            self._totals[name] += time.perf_counter() - start
            if self.bar is not None:
                self.bar.update(1)

    def metrics(self) -> dict[str, float]:
        """`{"time/<phase>": seconds, ..., "time/step": seconds since the step started}`."""
        result = {f"time/{name}": total for name, total in self._totals.items()}
        result["time/step"] = time.perf_counter() - self._step_start
        return result


def progress_enabled(stream=None) -> bool:
    """Whether bars are shown: ROLL_PROGRESS=0 hides, =1 forces, unset shows on a terminal only."""
    setting = os.environ.get("ROLL_PROGRESS", "").strip()
    if setting in ("0", "1"):
        return setting == "1"
    if setting:
        raise ValueError(
            f"ROLL_PROGRESS={setting!r} is invalid: use 0 (hide bars), 1 (show) or leave it unset"
        )
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


class StepProgress:
    """The step-loop bar: `advance(metrics)` moves one step and shows chosen metrics in the postfix.

    Without a terminal (bar disabled) the same summary goes to the log about every tenth of the run,
    so a job piped to a file still shows progress."""

    def __init__(
        self, bar: tqdm, postfix_keys: Sequence[str], *, desc: str, total: int, initial: int
    ) -> None:
        self.bar = bar
        self.postfix_keys = tuple(postfix_keys)
        self.desc, self.total, self.done = desc, total, initial

    def advance(self, metrics: Mapping[str, Any], n: int = 1) -> None:
        """Show the postfix keys present in `metrics` (4 significant digits) and add `n` steps."""
        shown = {key: f"{to_scalar(key, metrics[key]):.4g}" for key in self.postfix_keys if key in metrics}
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(n)
        self.done += n
        if self.bar.disable and (self.done % max(1, self.total // 10) == 0 or self.done == self.total):
            summary = " ".join(f"{key}={value}" for key, value in shown.items())
            logger.info("%s step %d/%d %s", self.desc, self.done, self.total, summary)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "StepProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def step_progress(
    total: int, initial: int = 0, desc: str = "train", postfix_keys: Sequence[str] = DEFAULT_POSTFIX_KEYS
) -> StepProgress:
    """The outer bar over pipeline steps; `initial` is the resume step."""
    bar = tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="step",
        file=sys.stderr,
        dynamic_ncols=True,
        disable=not progress_enabled(sys.stderr),
    )
    return StepProgress(bar, postfix_keys, desc=desc, total=total, initial=initial)


def phase_progress(total: Optional[int], desc: str, unit: str = "it") -> tqdm:
    """A transient inner bar for one phase (e.g. `phase_progress(n, "generate", unit="sample")`);
    it disappears when closed so only the step bar stays on screen."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
        disable=not progress_enabled(sys.stderr),
    )
