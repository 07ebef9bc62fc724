"""`RewardComputer`: the weighted sum of rule rewards over a batch, with per-call error and time limits.

Design: every (function, sample) call runs in a long-lived scoring process, never in the trainer,
so a runaway function (a `while True`, a catastrophic regex stuck in C) cannot hang it.
- Fast path: the batch is split over `num_workers` processes, sent in one message each; a worker
  scores its calls in order and streams back one small result per call (~tens of µs each).
- Deadline: a call's clock starts when the previous result of that worker arrives (or at submit),
  so a call is declared timed out only after it has run at least `timeout_s`. The worker is then
  killed (SIGKILL), the call scores 0 and counts in `reward/timeouts`, and a fresh worker (started
  outside the deadline) takes the rest of that shard.
- An exception, or a non-finite or non-numeric score, makes the call score 0 and counts in
  `reward/errors`; a worker that dies (segfault, OOM) counts its current call as an error and is
  replaced the same way.
Workers are fresh Python subprocesses (no fork: safe in a process full of threads, as Ray actors
are), so reward functions must be importable module-level functions; checked when it is built.
"""

import inspect
import math
import os
import pickle
import subprocess
import sys
import time
import weakref
from collections import deque
from multiprocessing.connection import Connection, Pipe, wait
from typing import Any, Optional

import numpy as np

from roll.config.pipeline import RewardConfig
from roll.rewards.registry import RewardFn, get_reward_fn
from roll.utils.logging import get_logger

logger = get_logger(__name__)

WORKER_START_TIMEOUT_S = 120.0

# (function index, response, answer): one call, as roll.rewards.scoring_worker receives it.
Call = tuple[int, str, str]


class _ScoringWorker:
    """One scoring process and the queue of calls (batch positions) it still owes results for.

    A plain `python -m roll.rewards.scoring_worker FD` subprocess rather than multiprocessing "spawn":
    spawn re-runs the parent's __main__ script, which breaks scripts without a main guard.
    """

    def __init__(self, functions: list[tuple[RewardFn, dict[str, Any]]]):
        self._functions = functions
        self.process: Optional[subprocess.Popen] = None
        self.conn: Optional[Connection] = None
        self.pending: deque[tuple[int, int]] = deque()
        self.deadline = math.inf

    def start(self) -> None:
        parent_conn, child_conn = Pipe(duplex=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        fd = child_conn.fileno()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "roll.rewards.scoring_worker", str(fd)], pass_fds=(fd,), env=env
        )
        child_conn.close()
        self.conn = parent_conn
        try:
            parent_conn.send(self._functions)
            if not parent_conn.poll(WORKER_START_TIMEOUT_S):
                raise RuntimeError(f"reward worker did not start within {WORKER_START_TIMEOUT_S}s")
            parent_conn.recv()
        except (EOFError, OSError):
            self.stop()
            raise RuntimeError("reward worker died at start-up; see its traceback above") from None
        except RuntimeError:
            self.stop()
            raise

    @property
    def connection(self) -> Connection:
        """The pipe to the running process; a worker with pending calls always has one."""
        assert self.conn is not None, "scoring worker is not started"
        return self.conn

    def submit(self, calls: list[Call], positions: list[tuple[int, int]], timeout_s: float) -> None:
        if self.process is None or self.process.poll() is not None:
            self.stop()  # a worker that died between batches leaves a stale connection behind
            self.start()
        self.pending = deque(positions)
        self.connection.send(calls)
        self.deadline = time.monotonic() + timeout_s

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=5)
        if self.conn is not None:
            self.conn.close()
        self.process, self.conn = None, None


def _stop_all(workers: list[_ScoringWorker]) -> None:
    for worker in workers:
        worker.stop()


class RewardComputer:
    """Scores batches with the weighted sum of `cfg.functions`; see the module docstring for limits."""

    def __init__(self, cfg: RewardConfig):
        self.cfg = cfg
        self.weights = np.array([f.weight for f in cfg.functions], dtype=np.float64)
        functions = []
        for k, spec in enumerate(cfg.functions):
            fn = get_reward_fn(spec.name)
            try:
                inspect.signature(fn).bind("", "", **spec.args)
            except TypeError as err:
                raise ValueError(
                    f"reward.functions[{k}] ({spec.name}): args {spec.args} do not fit "
                    f"{spec.name}{inspect.signature(fn)} ({err}); fix the args keys"
                ) from None
            if fn.__module__ == "__main__":
                raise ValueError(
                    f"reward.functions[{k}] ({spec.name}) is defined in the __main__ script; scoring "
                    "processes cannot import it: move it to an importable module"
                )
            try:
                pickle.dumps((fn, spec.args))
            except Exception as err:
                raise ValueError(
                    f"reward.functions[{k}] ({spec.name}) cannot be sent to a scoring process ({err}); "
                    "define reward functions and their args at module top level"
                ) from None
            functions.append((fn, dict(spec.args)))
        names = [f.name for f in cfg.functions]
        self.labels = [name if names.count(name) == 1 else f"{name}_{k}" for k, name in enumerate(names)]
        self._workers = [_ScoringWorker(functions) for _ in range(cfg.num_workers)]
        self._finalizer = weakref.finalize(self, _stop_all, self._workers)

    def close(self) -> None:
        """Stop the scoring processes (they restart on the next `score`)."""
        _stop_all(self._workers)

    def __enter__(self) -> "RewardComputer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def score(self, responses: list[str], answers: list[str]) -> tuple[np.ndarray, dict[str, float]]:
        """Weighted scores (B,) float32 and metrics: reward/<fn>/mean, reward/errors, reward/timeouts."""
        if len(responses) != len(answers):
            raise ValueError(
                f"score: {len(responses)} responses but {len(answers)} answers; pass one answer each"
            )
        num_fns, batch = len(self.labels), len(responses)
        raw = np.zeros((num_fns, batch), dtype=np.float64)
        counts = {"errors": 0, "timeouts": 0}
        positions = [(f, i) for i in range(batch) for f in range(num_fns)]
        shards = [s.tolist() for s in np.array_split(np.arange(len(positions)), len(self._workers))]
        first_error: Optional[str] = None

        def submit(worker: _ScoringWorker, todo: list[tuple[int, int]]) -> None:
            if todo:
                calls = [(f, responses[i], answers[i]) for f, i in todo]
                worker.submit(calls, todo, self.cfg.timeout_s)

        def replace(worker: _ScoringWorker, kind: str) -> None:
            counts[kind] += 1
            worker.pending.popleft()
            remaining = list(worker.pending)
            worker.stop()
            submit(worker, remaining)

        for worker, shard in zip(self._workers, shards):
            submit(worker, [positions[j] for j in shard])
        while busy := [w for w in self._workers if w.pending]:
            next_deadline = min(w.deadline for w in busy)
            wait([w.connection for w in busy], timeout=max(0.0, next_deadline - time.monotonic()))
            for worker in busy:
                if worker.connection.poll():
                    try:
                        value, error = worker.connection.recv()
                    except (EOFError, OSError):
                        first_error = first_error or "reward worker process died"
                        replace(worker, "errors")
                        continue
                    f, i = worker.pending.popleft()
                    raw[f, i] = value
                    worker.deadline = time.monotonic() + self.cfg.timeout_s
                    if error is not None:
                        counts["errors"] += 1
                        first_error = first_error or f"{self.labels[f]}: {error}"
                elif time.monotonic() >= worker.deadline:
                    f, i = worker.pending[0]
                    logger.warning(
                        f"reward {self.labels[f]} timed out after {self.cfg.timeout_s}s on sample {i}"
                    )
                    replace(worker, "timeouts")
        if first_error is not None:
            logger.warning(f"{counts['errors']} reward call(s) failed and scored 0; first: {first_error}")
        scores = (self.weights[:, None] * raw).sum(axis=0).astype(np.float32)
        metrics = {
            f"reward/{label}/mean": float(raw[k].mean()) if batch else 0.0
            for k, label in enumerate(self.labels)
        }
        metrics["reward/mean"] = float(scores.mean()) if batch else 0.0
        metrics["reward/errors"] = float(counts["errors"])
        metrics["reward/timeouts"] = float(counts["timeouts"])
        return scores, metrics
