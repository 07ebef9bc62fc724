"""Action parsing, constructor-argument checks and step results shared by the bundled text environments.

Parsers never raise: on any input they return a value or a `ParseError` whose message the env puts
in its invalid-action observation. Lengths are checked before any regex runs, so an overlong action
costs O(1). Only ASCII digits count as digits: `int()` and `Fraction()` accept e.g. Arabic-Indic
digits, which a policy should not be rewarded for.

    text = extract_answer(action, max_chars=2000)       # "<answer> 4 </answer>" -> "4"
    guess = parse_int(text, 1, 8) if isinstance(text, str) else text
    if isinstance(guess, ParseError): ...               # guess.message: "'4.5' is not an integer"

The step results the envs build alike live here too: `invalid_step`, `episode_over`, `limited_step`
(a move under a step limit) and `graded_step` with `attempts_left` (an answer out of a bounded
number of attempts).
"""

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from roll.envs.base import StepResult

OPEN_TAG = "<answer>"
CLOSE_TAG = "</answer>"
EPISODE_OVER = "The episode is over; call reset(seed) to start a new one.\n"
"""Observation of a step taken after the episode ended (terminated=True, reward 0, invalid)."""

_INT = re.compile(r"[+-]?[0-9]+")
# Integer or decimal, optionally over a second one ("3/4", "-1.5", "2/0.5"); no exponents, no inf/nan.
_NUMBER = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:/([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)))?")
_MAX_NUMBER_CHARS = 64


@dataclass(frozen=True)
class ParseError:
    """Why an action could not be parsed; `message` is a short clause for the observation."""

    message: str


def preview(text: str, limit: int = 24) -> str:
    """`text` quoted for an observation, cut to `limit` characters so feedback stays short."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def extract_answer(action: Any, max_chars: int = 2000, require_tag: bool = False) -> str | ParseError:
    """The stripped content of the first <answer>...</answer> in `action`, else the stripped action.

    Tags are case-sensitive. An unclosed or nested tag, a stray </answer>, an empty answer, a
    non-string or an action over `max_chars` characters is a ParseError; with `require_tag` so is
    an action without the tags.
    """
    if not isinstance(action, str):
        return ParseError(f"the action must be text, got {type(action).__name__}")
    if len(action) > max_chars:
        return ParseError(f"the action has {len(action)} characters; the limit is {max_chars}")
    start = action.find(OPEN_TAG)
    if start < 0:
        if CLOSE_TAG in action:
            return ParseError(f"{CLOSE_TAG} without {OPEN_TAG}")
        if require_tag:
            return ParseError(f"no {OPEN_TAG}...{CLOSE_TAG} found")
        text = action.strip()
    else:
        content_start = start + len(OPEN_TAG)
        end = action.find(CLOSE_TAG, content_start)
        if end < 0:
            return ParseError(f"{OPEN_TAG} is not closed by {CLOSE_TAG}")
        text = action[content_start:end]
        if OPEN_TAG in text:
            return ParseError(f"nested {OPEN_TAG} tags")
        text = text.strip()
    if not text:
        return ParseError("the answer is empty")
    return text


def parse_int(text: str, low: int, high: int) -> int | ParseError:
    """`text` as one integer in [low, high] (ASCII digits, optional sign, leading zeros ok)."""
    if not _INT.fullmatch(text):
        return ParseError(f"{preview(text)} is not an integer")
    digits = text.lstrip("+-").lstrip("0")
    # Bound the digit count before int(): a 100k-digit string would be slow and exceeds int's limit.
    if len(digits) > len(str(max(abs(low), abs(high)))):
        return ParseError(f"{preview(text)} is outside {low}..{high}")
    value = int(text)
    if not low <= value <= high:
        return ParseError(f"{value} is outside {low}..{high}")
    return value


def parse_choice(text: str, choices: Sequence[str]) -> str | ParseError:
    """The element of `choices` that `text` names, ignoring case and surrounding whitespace."""
    wanted = text.strip().lower()
    for choice in choices:
        if wanted == choice.lower():
            return choice
    return ParseError(f"{preview(text)} is not one of {', '.join(choices)}")


def parse_number(text: str) -> Fraction | ParseError:
    """`text` as an exact number: integer, decimal or a/b; commas, spaces and `$` are dropped.

    Exponents, inf/nan, non-ASCII digits and more than 64 characters are ParseErrors, so a huge
    value like "1e999999999" can never be built.
    """
    cleaned = text.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    if len(cleaned) > _MAX_NUMBER_CHARS:
        return ParseError(f"{preview(text)} is longer than {_MAX_NUMBER_CHARS} characters")
    match = _NUMBER.fullmatch(cleaned)
    if match is None:
        return ParseError(f"{preview(text)} is not a number")
    numerator, denominator = match.group(1), match.group(2)
    value = Fraction(numerator)
    if denominator is not None:
        if Fraction(denominator) == 0:
            return ParseError(f"{preview(text)} divides by zero")
        value /= Fraction(denominator)
    return value


def invalid_step(observation: str, penalty: float, info: dict[str, Any]) -> StepResult:
    """The result of an invalid action: `observation` says why, reward `penalty`, the episode goes on."""
    return StepResult(observation=observation, reward=penalty, terminated=False, truncated=False, info=info)


def episode_over(info: dict[str, Any]) -> StepResult:
    """The result of a step taken after the episode ended: EPISODE_OVER, reward 0.0, terminated."""
    return StepResult(observation=EPISODE_OVER, reward=0.0, terminated=True, truncated=False, info=info)


def graded_step(observation: str, correct: bool, done: bool, info: dict[str, Any]) -> StepResult:
    """The result of a graded answer: reward 1.0 if `correct`, else 0.0; terminated when `done`."""
    return StepResult(
        observation=observation, reward=1.0 if correct else 0.0, terminated=done, truncated=False, info=info
    )


def limited_step(
    observation: str, reward: float, terminated: bool, out_of_steps: bool, info: dict[str, Any]
) -> StepResult:
    """The result of a move under a step limit: truncated, with "Out of steps." appended to
    `observation`, when the move did not end the episode and `out_of_steps`."""
    truncated = not terminated and out_of_steps
    if truncated:
        observation += "Out of steps.\n"
    return StepResult(
        observation=observation, reward=reward, terminated=terminated, truncated=truncated, info=info
    )


def attempts_left(left: int) -> str:
    """Feedback on the attempts still open: "No attempts left.", "1 attempt left.", "3 attempts left."."""
    if left == 0:
        return "No attempts left."
    return f"{left} attempt{'s' if left > 1 else ''} left."


def check_int(owner: str, name: str, value: Any, low: int, high: int | None = None) -> int:
    """`value` if it is an int in [low, high]; else a ValueError naming `owner`, the arg and the fix."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bounds = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ValueError(f"{owner}: {name}={value!r} is invalid; set {name} to {bounds}")
    return value


def check_float(owner: str, name: str, value: Any, low: float = -math.inf, high: float = math.inf) -> float:
    """`value` as a float if it is a finite number in [low, high]; else a ValueError with the fix."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or not low <= value <= high:
        bounds = " and ".join(
            part
            for part in (f">= {low}" if low > -math.inf else "", f"<= {high}" if high < math.inf else "")
            if part
        )
        raise ValueError(
            f"{owner}: {name}={value!r} is invalid; set {name} to a finite number {bounds}".rstrip()
        )
    return float(value)
