"""Tests for roll.utils.tracking: metrics.jsonl lines, resume truncation, TensorBoard events read back
with TensorBoard's own reader, PhaseTimer against known sleeps, summarize against plain loops, bars."""

import io
import json
import math
import time

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from roll.utils import tracking
from roll.utils.tracking import (
    MetricsTracker,
    PhaseTimer,
    phase_progress,
    progress_enabled,
    step_progress,
    summarize,
)


def _lines(output_dir) -> list[dict]:
    with open(output_dir / "metrics.jsonl", encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def _tensorboard_scalars(output_dir, tag: str) -> list[tuple[int, float]]:
    accumulator = EventAccumulator(str(output_dir / "tensorboard"))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_each_line_is_the_logged_dict_with_scalars_converted(tmp_path):
    with MetricsTracker(str(tmp_path), tensorboard=False) as tracker:
        tracker.log(
            0, {"reward/mean": torch.tensor(0.25), "grad_norm": np.float32(1.5), "tokens": np.int64(7)}
        )
        tracker.log(1, {"reward/mean": 0.75, "kl": torch.tensor([2.5], dtype=torch.bfloat16), "ok": True})
        # Lines are on disk before close(): a crashed run keeps every logged step.
        assert len(_lines(tmp_path)) == 2
    lines = _lines(tmp_path)
    assert lines == [
        {"step": 0, "reward/mean": 0.25, "grad_norm": 1.5, "tokens": 7},
        {"step": 1, "reward/mean": 0.75, "kl": 2.5, "ok": 1},
    ]
    assert type(lines[0]["tokens"]) is int and type(lines[0]["grad_norm"]) is float


def test_non_finite_values_are_strict_json_strings_that_float_reads_back(tmp_path):
    with MetricsTracker(str(tmp_path), tensorboard=False) as tracker:
        tracker.log(3, {"a": float("nan"), "b": torch.tensor(float("inf")), "c": np.float64(-np.inf)})
    raw = (tmp_path / "metrics.jsonl").read_text()
    # Strict parsers reject bare NaN/Infinity tokens; this one refuses them.
    record = json.loads(raw, parse_constant=lambda token: pytest.fail(f"bare {token} in {raw!r}"))
    assert record == {"step": 3, "a": "NaN", "b": "Infinity", "c": "-Infinity"}
    assert (
        math.isnan(float(record["a"])) and float(record["b"]) == math.inf and float(record["c"]) == -math.inf
    )


def test_bad_metrics_and_steps_are_refused_with_the_name(tmp_path):
    with MetricsTracker(str(tmp_path), tensorboard=False) as tracker:
        with pytest.raises(ValueError, match=r"'kl'.*shape \(2,\)"):
            tracker.log(0, {"kl": torch.zeros(2)})
        with pytest.raises(ValueError, match=r"'lens'.*shape \(3,\)"):
            tracker.log(0, {"lens": np.zeros(3)})
        with pytest.raises(ValueError, match="'name'.*str"):
            tracker.log(0, {"name": "x"})
        with pytest.raises(ValueError, match="'step' is reserved"):
            tracker.log(0, {"step": 1})
        with pytest.raises(ValueError, match="step=-1"):
            tracker.log(-1, {"a": 1.0})
        with pytest.raises(ValueError, match="step=1.5"):
            tracker.log(1.5, {"a": 1.0})
    assert _lines(tmp_path) == []


def test_fresh_run_overwrites_and_resume_truncates_redone_steps(tmp_path):
    with MetricsTracker(str(tmp_path), tensorboard=False) as tracker:
        for step in range(5):
            tracker.log(step, {"loss": float(step)})
    with MetricsTracker(str(tmp_path), tensorboard=False, resume=True) as tracker:
        tracker.truncate_from(3)
        assert [line["step"] for line in _lines(tmp_path)] == [0, 1, 2]
        for step in (3, 4):
            tracker.log(step, {"loss": 10.0 * step})
    assert _lines(tmp_path) == [
        {"step": s, "loss": v} for s, v in [(0, 0.0), (1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    ]
    with MetricsTracker(str(tmp_path), tensorboard=False) as tracker:
        tracker.log(0, {"loss": -1.0})
    assert _lines(tmp_path) == [{"step": 0, "loss": -1.0}]


def test_resume_without_explicit_truncate_drops_from_first_logged_step_and_torn_lines(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 0, "loss": 0.0}\n{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 2.0}\n{"step": 3, "lo'
    )
    with MetricsTracker(str(tmp_path), tensorboard=False, resume=True) as tracker:
        tracker.log(2, {"loss": 20.0})
    assert _lines(tmp_path) == [{"step": 0, "loss": 0.0}, {"step": 1, "loss": 1.0}, {"step": 2, "loss": 20.0}]


def test_resume_into_an_empty_directory_starts_the_file(tmp_path):
    with MetricsTracker(str(tmp_path / "new"), tensorboard=False, resume=True) as tracker:
        tracker.log(4, {"loss": 4.0})
    assert _lines(tmp_path / "new") == [{"step": 4, "loss": 4.0}]


def test_tensorboard_scalars_read_back_and_resume_purges_redone_steps(tmp_path):
    with MetricsTracker(str(tmp_path)) as tracker:
        for step in range(5):
            tracker.log(step, {"reward/mean": torch.tensor(0.5 * step), "kl": np.float32(step + 0.25)})
    assert _tensorboard_scalars(tmp_path, "reward/mean") == [(s, pytest.approx(0.5 * s)) for s in range(5)]
    assert _tensorboard_scalars(tmp_path, "kl") == [(s, pytest.approx(s + 0.25)) for s in range(5)]

    with MetricsTracker(str(tmp_path), resume=True) as tracker:
        tracker.truncate_from(3)
        for step in (3, 4):
            tracker.log(step, {"reward/mean": 100.0 + step})
    expected = [(0, 0.0), (1, 0.5), (2, 1.0), (3, 103.0), (4, 104.0)]
    assert _tensorboard_scalars(tmp_path, "reward/mean") == [(s, pytest.approx(v)) for s, v in expected]


def test_tensorboard_off_writes_no_events(tmp_path):
    with MetricsTracker(str(tmp_path), tensorboard=False) as tracker:
        tracker.log(0, {"a": 1.0})
    assert not (tmp_path / "tensorboard").exists()


def test_phase_timer_sums_repeated_phases_against_known_sleeps():
    timer = PhaseTimer()
    for _ in range(2):
        with timer.phase("rollout"):
            time.sleep(0.05)
    with timer.phase("train"):
        time.sleep(0.03)
    time.sleep(0.02)
    metrics = timer.metrics()
    assert set(metrics) == {"time/rollout", "time/train", "time/step"}
    assert 0.10 <= metrics["time/rollout"] < 0.10 + 0.3
    assert 0.03 <= metrics["time/train"] < 0.03 + 0.3
    assert metrics["time/step"] >= metrics["time/rollout"] + metrics["time/train"] + 0.02
    timer.reset()
    with timer.phase("sync"):
        pass
    assert set(timer.metrics()) == {"time/sync", "time/step"}
    assert timer.metrics()["time/step"] < 0.1


def test_phase_timer_counts_a_phase_that_raises_and_refuses_reserved_names():
    timer = PhaseTimer()
    with pytest.raises(RuntimeError), timer.phase("reward"):
        time.sleep(0.02)
        raise RuntimeError("boom")
    assert timer.metrics()["time/reward"] >= 0.02
    with pytest.raises(ValueError, match="'step'"), timer.phase("step"):
        pass


@pytest.mark.parametrize(
    "values", [[1.0, 2.0, 4.0, -3.0], np.array([[0.5, 1.5], [2.5, 3.5]]), torch.tensor([2.0, 2.0, 5.0])]
)
def test_summarize_matches_a_plain_loop(values):
    flat = [float(v) for v in np.asarray(values).reshape(-1)]
    mean = sum(flat) / len(flat)
    std = math.sqrt(sum((v - mean) ** 2 for v in flat) / len(flat))
    assert summarize(values, "reward") == {
        "reward/mean": pytest.approx(mean),
        "reward/std": pytest.approx(std),
        "reward/max": max(flat),
        "reward/min": min(flat),
    }
    assert summarize(torch.tensor([3.0], dtype=torch.bfloat16), "len")["len/std"] == 0.0
    with pytest.raises(ValueError, match="'reward'.*no values"):
        summarize([], "reward")


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_follows_tty_unless_roll_progress_says_otherwise(monkeypatch):
    monkeypatch.delenv("ROLL_PROGRESS", raising=False)
    assert progress_enabled(_Stream(tty=True)) and not progress_enabled(_Stream(tty=False))
    monkeypatch.setenv("ROLL_PROGRESS", "0")
    assert not progress_enabled(_Stream(tty=True))
    monkeypatch.setenv("ROLL_PROGRESS", "1")
    assert progress_enabled(_Stream(tty=False))
    monkeypatch.setenv("ROLL_PROGRESS", "yes")
    with pytest.raises(ValueError, match="ROLL_PROGRESS='yes'"):
        progress_enabled(_Stream(tty=True))


def test_phase_bar_counts_on_stderr_and_clears_itself(monkeypatch, capsys):
    monkeypatch.setenv("ROLL_PROGRESS", "1")
    with phase_progress(6, "generate", unit="sample") as bar:
        bar.update(4)
        bar.refresh()
        assert "generate" in capsys.readouterr().err and "4/6" in str(bar)
    # Closing a transient bar blanks its line instead of leaving it on screen.
    assert capsys.readouterr().err.strip() == ""
    monkeypatch.setenv("ROLL_PROGRESS", "0")
    with phase_progress(6, "generate") as bar:
        bar.update(6)
    assert capsys.readouterr().err == ""


def test_step_bar_shows_postfix_metrics_on_stderr(monkeypatch, capsys):
    monkeypatch.setenv("ROLL_PROGRESS", "1")
    with step_progress(4, initial=1, desc="rlvr", postfix_keys=("reward/mean", "time/step")) as bar:
        bar.advance({"reward/mean": torch.tensor(0.123456), "kl": 9.0, "time/step": 2.0})
        assert bar.bar.n == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "rlvr" in captured.err and "reward/mean=0.1235" in captured.err and "time/step=2" in captured.err
    assert "kl=" not in captured.err

    monkeypatch.setenv("ROLL_PROGRESS", "0")
    with step_progress(4) as bar:
        bar.advance({"reward/mean": 1.0})
    assert capsys.readouterr().err == ""


def test_phase_timer_drives_a_phase_bar(monkeypatch, capsys):
    monkeypatch.setenv("ROLL_PROGRESS", "1")
    with phase_progress(None, "start", unit="phase") as bar:
        timer = PhaseTimer(bar)
        with timer.phase("rollout"):
            assert bar.desc == "rollout" and bar.n == 0
        with timer.phase("reward"):
            assert bar.desc == "reward" and bar.n == 1
        assert bar.n == 2
    assert set(timer.metrics()) == {"time/rollout", "time/reward", "time/step"}
    assert "reward" in capsys.readouterr().err


def test_step_progress_logs_a_summary_every_tenth_without_a_terminal(monkeypatch):
    monkeypatch.setenv("ROLL_PROGRESS", "0")
    messages: list[str] = []
    monkeypatch.setattr(tracking.logger, "info", lambda fmt, *args: messages.append(fmt % args))
    with step_progress(20, desc="sft") as bar:
        for _ in range(20):
            bar.advance({"sft/loss": 0.5})
    assert messages == [f"sft step {done}/20 sft/loss=0.5" for done in range(2, 21, 2)]
