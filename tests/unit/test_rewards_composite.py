"""RewardComputer: weighted sum against a plain loop, and failing, hanging, crashing and NaN-returning
reward functions scoring 0 and being counted, without hanging the caller."""

import math
import os
import time

import numpy as np
import pytest

from roll.config.pipeline import RewardConfig
from roll.rewards import RewardComputer, get_reward_fn, register_reward


@register_reward("test_raises_on_bad")
def raises_on_bad(response: str, answer: str) -> float:
    if "bad" in response:
        raise RuntimeError("boom")
    return 1.0


@register_reward("test_hangs_on_hang")
def hangs_on_hang(response: str, answer: str) -> float:
    while "hang" in response:
        pass
    return 1.0


@register_reward("test_dies_on_die")
def dies_on_die(response: str, answer: str) -> float:
    if "die" in response:
        os._exit(3)
    return 1.0


@register_reward("test_nan_on_nan")
def nan_on_nan(response: str, answer: str) -> float:
    return math.nan if "nan" in response else 0.5


def make(functions, timeout_s=10.0, num_workers=1) -> RewardComputer:
    return RewardComputer(RewardConfig(functions=functions, timeout_s=timeout_s, num_workers=num_workers))


RESPONSES = ["\\boxed{3}", "<answer>4</answer>", "the answer is 5", "<answer>7</answer> or 8", "nothing"]
ANSWERS = ["3", "4", "6", "8", "1"]


@pytest.mark.parametrize("num_workers", [1, 2])
def test_weighted_sum_matches_plain_loop(num_workers):
    functions = [{"name": "math_exact", "weight": 1.0}, {"name": "format", "weight": 0.25}]
    with make(functions, num_workers=num_workers) as computer:
        scores, metrics = computer.score(RESPONSES, ANSWERS)
        again, _ = computer.score(RESPONSES[:2], ANSWERS[:2])  # the workers are reused
    math_fn, format_fn = get_reward_fn("math_exact"), get_reward_fn("format")
    expected_math = [math_fn(r, a) for r, a in zip(RESPONSES, ANSWERS)]
    expected_format = [format_fn(r, a) for r, a in zip(RESPONSES, ANSWERS)]
    expected = [m + 0.25 * f for m, f in zip(expected_math, expected_format)]
    assert expected_math == [1.0, 1.0, 0.0, 0.0, 0.0] and expected_format == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert scores.dtype == np.float32 and scores.tolist() == expected
    assert again.tolist() == expected[:2]
    assert metrics["reward/math_exact/mean"] == pytest.approx(2 / 5)
    assert metrics["reward/format/mean"] == pytest.approx(2 / 5)
    assert metrics["reward/mean"] == pytest.approx(sum(expected) / 5)
    assert metrics["reward/errors"] == 0 and metrics["reward/timeouts"] == 0


def test_duplicate_function_names_get_distinct_metrics():
    functions = [{"name": "format"}, {"name": "format", "args": {"pattern": "^x"}}]
    with make(functions) as computer:
        scores, metrics = computer.score(["x <answer>1</answer>", "y"], ["", ""])
    assert scores.tolist() == [2.0, 0.0]
    assert metrics["reward/format_0/mean"] == 0.5 and metrics["reward/format_1/mean"] == 0.5


def test_exceptions_and_nan_score_zero_and_are_counted():
    functions = [{"name": "test_raises_on_bad", "weight": 2.0}, {"name": "test_nan_on_nan"}]
    responses = ["good", "bad", "nan", "bad nan"]
    with make(functions) as computer:
        scores, metrics = computer.score(responses, [""] * 4)
    assert scores.tolist() == [2.0 + 0.5, 0.5, 2.0, 0.0]
    assert metrics["reward/errors"] == 4 and metrics["reward/timeouts"] == 0


def test_runaway_function_times_out_without_hanging():
    responses = ["ok", "hang", "ok", "hang", "ok"]
    functions = [{"name": "test_hangs_on_hang"}, {"name": "format", "args": {"pattern": "ok"}}]
    with make(functions, timeout_s=0.5, num_workers=2) as computer:
        computer.score(["warm"], [""])  # start-up is not part of the measured time
        start = time.monotonic()
        scores, metrics = computer.score(responses, [""] * 5)
        elapsed = time.monotonic() - start
    assert scores.tolist() == [2.0, 0.0, 2.0, 0.0, 2.0]
    assert metrics["reward/timeouts"] == 2 and metrics["reward/errors"] == 0
    # Two 0.5 s deadlines plus two replacement workers' start-up, far from forever.
    assert elapsed < 15.0


def test_crashing_worker_counts_an_error_and_the_rest_is_scored():
    with make([{"name": "test_dies_on_die"}]) as computer:
        scores, metrics = computer.score(["a", "die", "b"], ["", "", ""])
    assert scores.tolist() == [1.0, 0.0, 1.0]
    assert metrics["reward/errors"] == 1 and metrics["reward/timeouts"] == 0


def test_empty_batch():
    with make([{"name": "math_exact"}]) as computer:
        scores, metrics = computer.score([], [])
    assert scores.shape == (0,) and metrics["reward/errors"] == 0


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match=r"reward.functions\[0\] \(format\): args .*patern"):
        make([{"name": "format", "args": {"patern": "x"}}])
    with pytest.raises(ValueError, match="Did you mean 'math_exact'"):
        make([{"name": "math_exat"}])
    with (
        make([{"name": "math_exact"}]) as computer,
        pytest.raises(ValueError, match="2 responses but 1 answers"),
    ):
        computer.score(["1", "2"], ["1"])
