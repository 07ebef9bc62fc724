"""`math`: answer a math question with a number in <answer></answer>.

Problems are {"question": str, "answer": number or numeric string} rows from `problems` or from the
jsonl file at `path` (all checked at construction); reset picks row seed % len. With neither, each
seed generates an arithmetic word problem with an integer answer from the templates below.

    reset:  "<question>\\nGive the final answer as a number in <answer></answer>. You may use the python tool to check your work.\\n"
    step:   "... <answer>22</answer>"  ->  "22 is correct!\\n" | "21 is incorrect. 1 attempt left.\\n" | "21 is incorrect.\\n"

Answers compare exactly as rationals: "3/4" == "0.75", "1,200" == "1200", "$5" == "5" (a
rounded "0.333" is not 1/3). Reward 1.0 when correct (terminated, success); a wrong number is an
attempt (0.0) and the episode terminates when `max_attempts` are used. An action without
<answer></answer> or whose answer is not a number is invalid: `invalid_penalty`, no attempt used.
`info["state"]` is "<problem index or seed>:<attempts left>".
"""

import json
import math
import os
import random
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from roll.envs.base import StepResult
from roll.envs.parsing import (
    ParseError,
    attempts_left,
    check_float,
    check_int,
    episode_over,
    extract_answer,
    graded_step,
    invalid_step,
    parse_number,
)
from roll.envs.registry import register_env

_NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jo")


def _add(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(2, 60), rng.randint(2, 40)
    animal = rng.choice(("cows", "sheep", "goats", "hens"))
    return f"A farmer has {a} {animal} and buys {b} more. How many {animal} does the farmer have now?", a + b


def _subtract(rng: random.Random) -> tuple[str, int]:
    b = rng.randint(2, 40)
    a = b + rng.randint(1, 60)
    item = rng.choice(("cookies", "muffins", "rolls", "pies"))
    return f"A baker made {a} {item} and sold {b} of them. How many {item} are left?", a - b


def _multiply(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    fruit = rng.choice(("apples", "pears", "plums", "lemons"))
    return f"There are {a} boxes with {b} {fruit} in each box. How many {fruit} are there in total?", a * b


def _divide(rng: random.Random) -> tuple[str, int]:
    each, children = rng.randint(2, 12), rng.randint(2, 9)
    return (
        f"{each * children} stickers are shared equally among {children} children. "
        "How many stickers does each child get?",
        each,
    )


def _two_steps(rng: random.Random) -> tuple[str, int]:
    name = rng.choice(_NAMES)
    a = rng.randint(10, 60)
    b, c = rng.randint(1, a - 1), rng.randint(1, 30)
    return (
        f"{name} has {a} marbles, gives {b} to a friend and then finds {c} more. How many marbles now?",
        a - b + c,
    )


def _cost(rng: random.Random) -> tuple[str, int]:
    price, count, paid_extra = rng.randint(2, 15), rng.randint(2, 9), rng.randint(1, 20)
    name = rng.choice(_NAMES)
    total = price * count
    return (
        f"{name} buys {count} pens at {price} dollars each and pays with {total + paid_extra} dollars. "
        "How many dollars of change does " + name + " get?",
        paid_extra,
    )


TEMPLATES: tuple[Callable[[random.Random], tuple[str, int]], ...] = (
    _add,
    _subtract,
    _multiply,
    _divide,
    _two_steps,
    _cost,
)


def generate_problem(seed: int) -> tuple[str, int]:
    """(question, integer answer) of the word problem `seed` determines."""
    rng = random.Random(seed)
    return rng.choice(TEMPLATES)(rng)


def _load_jsonl(path: str) -> list[dict[str, Any]]:
    if not os.path.isfile(path):
        raise ValueError(f"math: path={path!r} is not a file; give a jsonl file of {{question, answer}} rows")
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"math: {path}:{line_no} is not JSON ({err}); fix the line") from None
    return rows


def _check_rows(rows: Any, where: str) -> list[tuple[str, Fraction]]:
    """(question, exact answer) per row; ValueError naming the first bad row."""
    if not isinstance(rows, list) or not rows:
        raise ValueError(
            f"math: {where} must be a non-empty list of {{question, answer}} rows, got {rows!r:.80}"
        )
    checked = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or "answer" not in row:
            raise ValueError(f"math: {where}[{i}]={row!r:.80} needs a 'question' string and an 'answer'")
        answer = row["answer"]
        value: Fraction | ParseError = ParseError("not a number")
        if isinstance(answer, int) and not isinstance(answer, bool):
            value = Fraction(answer)
        elif isinstance(answer, float) and math.isfinite(answer):
            value = Fraction(repr(answer))  # the decimal as written: 0.1 -> 1/10, not the binary float
        elif isinstance(answer, str):
            value = parse_number(answer.strip())
        if isinstance(value, ParseError):
            raise ValueError(
                f"math: {where}[{i}] answer {answer!r:.40} is not a number; use e.g. 42, 0.5 or '3/4'"
            )
        checked.append((row["question"], value))
    return checked


@register_env("math")
class MathEnv:
    """Single-question math problems, checked numerically (see the module docstring)."""

    def __init__(
        self,
        problems: list[dict] | None = None,
        path: str | None = None,
        max_attempts: int = 1,
        invalid_penalty: float = 0.0,
        max_action_chars: int = 2000,
    ) -> None:
        name = "math"
        if problems is not None and path is not None:
            raise ValueError(f"{name}: give problems or path, not both (path={path!r})")
        if path is not None and not isinstance(path, str):
            raise ValueError(f"{name}: path={path!r} is invalid; give the path of a jsonl file")
        self.rows: list[tuple[str, Fraction]] | None = None
        if problems is not None:
            self.rows = _check_rows(problems, "problems")
        elif path is not None:
            self.rows = _check_rows(_load_jsonl(path), path)
        self.max_attempts = check_int(name, "max_attempts", max_attempts, 1)
        self.invalid_penalty = check_float(name, "invalid_penalty", invalid_penalty)
        self.max_action_chars = check_int(name, "max_action_chars", max_action_chars, 1)
        self.question = ""
        self.answer = Fraction(0)
        self._key = ""
        self._attempts = 0
        self._done = False
        self._success = False

    def reset(self, seed: int) -> tuple[str, dict[str, Any]]:
        """Pick (or generate) the problem for `seed`; the observation is the question and the format."""
        if self.rows is not None:
            index = seed % len(self.rows)
            self.question, self.answer = self.rows[index]
            self._key = str(index)
        else:
            self.question, answer = generate_problem(seed)
            self.answer = Fraction(answer)
            self._key = f"seed{seed}"
        self._attempts = 0
        self._done = False
        self._success = False
        observation = (
            f"{self.question.strip()}\nGive the final answer as a number in <answer></answer>. "
            "You may use the python tool to check your work.\n"
        )
        return observation, {"success": False, "state": self._state()}

    def step(self, action: str) -> StepResult:
        """Check the answer; see the module docstring for the observations and rewards."""
        if not self._key:
            raise RuntimeError("MathEnv.step called before reset(seed); call reset first")
        if self._done:
            return episode_over(self._info(True))
        text = extract_answer(action, self.max_action_chars, require_tag=True)
        value = parse_number(text) if isinstance(text, str) else text
        if isinstance(value, ParseError):
            observation = f"Invalid answer: {value.message}. Give one number, e.g. <answer>42</answer>.\n"
            return invalid_step(observation, self.invalid_penalty, self._info(True))
        assert isinstance(text, str)
        shown = text if len(text) <= 24 else text[:24] + "..."
        self._attempts += 1
        left = self.max_attempts - self._attempts
        self._success = value == self.answer
        self._done = self._success or left == 0
        if self._success:
            observation = f"{shown} is correct!\n"
        else:
            tail = "" if self._done else " " + attempts_left(left)
            observation = f"{shown} is incorrect.{tail}\n"
        return graded_step(observation, self._success, self._done, self._info(False))

    def _state(self) -> str:
        return f"{self._key}:{self.max_attempts - self._attempts}"

    def _info(self, invalid: bool) -> dict[str, Any]:
        return {"success": self._success, "invalid_action": invalid, "state": self._state()}
