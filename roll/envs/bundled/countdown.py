"""`countdown`: combine the given numbers with + - * / to hit a target.

Each reset seed draws `num_numbers` integers in [1, max_number] and builds the target from a random
expression that uses every one of them once (random order, operators and tree shape, divisions
exact), retried until its value is an integer in [1, max_target]: the target is always reachable.

The answer is an expression using each given number EXACTLY once, with + - * /, parentheses and
unary minus (no powers, names, calls, decimals), bare or in <answer></answer>; "=" is not allowed.
It is evaluated exactly (fractions) by the AST interpreter of `roll.rewards.rule_countdown`, never
`eval`.

    reset:  "Numbers: 3 7 12. Target: 33. Use each number exactly once with + - * / and parentheses,
             e.g. <answer>(1 + 2) * 3</answer>. You may use the calculator tool.\\n"
    step:   "(12 - 7) * 3"  ->  "(12 - 7) * 3 = 15, not 33. 2 attempts left.\\n"
            "<answer>3 * 7 + 12</answer>"  ->  "3 * 7 + 12 = 33. Correct!\\n"

Reward 1.0 when the expression equals the target (terminated, success). A well-formed expression
that misses is an attempt: 0.0, feedback with its value, and after `max_attempts` misses the episode
terminates with 0.0. An action that is not such an expression (wrong numbers, bad syntax, division
by zero) is invalid: `invalid_penalty`, no attempt used. `info["state"]` is
"<numbers> -> <target>, <attempts left>".
"""

import ast
import random
import re
from collections import Counter
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
    preview,
)
from roll.envs.registry import register_env
from roll.rewards.rule_countdown import UnsafeExpression, evaluate_arithmetic

_ALLOWED = re.compile(r"[0-9+\-*/()\s]+", re.ASCII)
_OPS = ("+", "-", "*", "/")
_MAX_PUZZLE_DRAWS = 100_000


def _combine(left: Fraction, right: Fraction, op: str) -> Fraction | None:
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if right == 0 or (left / right).denominator != 1:
        return None
    return left / right


def random_expression(numbers: list[int], rng: random.Random) -> tuple[str, Fraction] | None:
    """A random expression using every number once and its value; None if a division was not exact."""
    items: list[tuple[str, Fraction]] = [(str(n), Fraction(n)) for n in rng.sample(numbers, len(numbers))]
    while len(items) > 1:
        i = rng.randrange(len(items) - 1)  # merge two neighbours: a random tree over a random order
        (left_text, left), (right_text, right) = items[i], items[i + 1]
        op = rng.choice(_OPS)
        value = _combine(left, right, op)
        if value is None:
            return None
        items[i : i + 2] = [(f"({left_text} {op} {right_text})", value)]
    text, value = items[0]
    return (text[1:-1] if text.startswith("(") else text), value


def generate_puzzle(
    num_numbers: int, max_number: int, max_target: int, rng: random.Random
) -> tuple[list[int], int, str]:
    """(numbers, target, an expression reaching it) drawn from `rng`; see the module docstring."""
    for _ in range(_MAX_PUZZLE_DRAWS):
        numbers = [rng.randint(1, max_number) for _ in range(num_numbers)]
        drawn = random_expression(numbers, rng)
        if drawn is not None and drawn[1].denominator == 1 and 1 <= drawn[1] <= max_target:
            return numbers, int(drawn[1]), drawn[0]
    raise RuntimeError(
        f"countdown: no target in [1, {max_target}] from {num_numbers} numbers in [1, {max_number}] in "
        f"{_MAX_PUZZLE_DRAWS} draws; raise max_target"
    )


def check_expression(text: str, numbers: list[int]) -> tuple[str, Fraction] | ParseError:
    """(normalised text, exact value) of `text` if it is an allowed expression over exactly `numbers`."""
    if "=" in text:
        return ParseError("give only the expression, without '='")
    if not _ALLOWED.fullmatch(text):
        return ParseError(f"{preview(text)} has characters other than digits, + - * / and parentheses")
    try:
        value, used = evaluate_arithmetic(text)
        tree = ast.parse(text, mode="eval")
    except UnsafeExpression as err:
        return ParseError(f"{preview(text)} is not allowed: {err}")
    except ZeroDivisionError:
        return ParseError(f"{preview(text)} divides by zero")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ParseError(f"{preview(text)} is not an arithmetic expression")
    if Counter(used) != Counter(numbers):
        shown = " ".join(map(str, sorted(used))) or "none"
        return ParseError(
            f"it uses the numbers {shown}; use each of {' '.join(map(str, numbers))} exactly once"
        )
    return ast.unparse(tree), value


@register_env("countdown")
class Countdown:
    """Arithmetic puzzle over seeded numbers and a reachable target (see the module docstring)."""

    def __init__(
        self,
        num_numbers: int = 3,
        max_number: int = 20,
        max_target: int = 100,
        invalid_penalty: float = 0.0,
        max_attempts: int = 3,
        max_action_chars: int = 2000,
    ) -> None:
        name = "countdown"
        self.num_numbers = check_int(name, "num_numbers", num_numbers, 2, 6)
        self.max_number = check_int(name, "max_number", max_number, 1, 1000)
        self.max_target = check_int(name, "max_target", max_target, 1)
        self.invalid_penalty = check_float(name, "invalid_penalty", invalid_penalty)
        self.max_attempts = check_int(name, "max_attempts", max_attempts, 1)
        self.max_action_chars = check_int(name, "max_action_chars", max_action_chars, 1)
        try:  # fail at construction, not in a rollout worker, when targets are (nearly) unreachable
            for seed in range(4):
                generate_puzzle(self.num_numbers, self.max_number, self.max_target, random.Random(seed))
        except RuntimeError as err:
            raise ValueError(str(err)) from None
        self.numbers: list[int] = []
        self.target = 0
        self.solution = ""
        """An expression reaching the target (the one the target was built from)."""
        self._attempts = 0
        self._done = False
        self._success = False

    def reset(self, seed: int) -> tuple[str, dict[str, Any]]:
        """Draw the numbers and target from `seed`; the observation states them and the format."""
        rng = random.Random(seed)
        self.numbers, self.target, self.solution = generate_puzzle(
            self.num_numbers, self.max_number, self.max_target, rng
        )
        self._attempts = 0
        self._done = False
        self._success = False
        observation = (
            f"Numbers: {' '.join(map(str, self.numbers))}. Target: {self.target}. "
            "Use each number exactly once with + - * / and parentheses, "
            "e.g. <answer>(1 + 2) * 3</answer>. "
            "You may use the calculator tool.\n"
        )
        return observation, {"success": False, "state": self._state()}

    def step(self, action: str) -> StepResult:
        """Check one expression; see the module docstring for the observations and rewards."""
        if not self.numbers:
            raise RuntimeError("Countdown.step called before reset(seed); call reset first")
        if self._done:
            return episode_over(self._info(True))
        text = extract_answer(action, self.max_action_chars)
        checked = check_expression(text, self.numbers) if isinstance(text, str) else text
        if isinstance(checked, ParseError):
            observation = (
                f"Invalid answer: {checked.message}. Answer with one expression, "
                "e.g. <answer>(1 + 2) * 3</answer>.\n"
            )
            return invalid_step(observation, self.invalid_penalty, self._info(True))
        expression, value = checked
        self._attempts += 1
        left = self.max_attempts - self._attempts
        self._success = value == self.target
        self._done = self._success or left == 0
        if self._success:
            observation = f"{expression} = {self.target}. Correct!\n"
        else:
            observation = f"{expression} = {value}, not {self.target}. {attempts_left(left)}\n"
        return graded_step(observation, self._success, self._done, self._info(False))

    def _state(self) -> str:
        return (
            f"{' '.join(map(str, self.numbers))} -> {self.target}, {self.max_attempts - self._attempts} left"
        )

    def _info(self, invalid: bool) -> dict[str, Any]:
        return {"success": self._success, "invalid_action": invalid, "state": self._state()}
