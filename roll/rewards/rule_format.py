"""`format`: 1.0 when the response matches a regex (by default it contains <answer>...</answer>)."""

import re
from functools import lru_cache

from roll.rewards.registry import register_reward

DEFAULT_FORMAT_PATTERN = r"<answer>.+?</answer>"


@lru_cache(maxsize=64)
def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error as err:
        raise ValueError(f"format reward: pattern {pattern!r} is not a valid regex ({err})") from None


@register_reward("format")
def format_reward(
    response: str, answer: str, pattern: str = DEFAULT_FORMAT_PATTERN, full_match: bool = False
) -> float:
    """1.0 if `pattern` is found in `response` (or matches all of it when `full_match`), else 0.0.

    `answer` is unused: the format of a response does not depend on the reference.
    """
    compiled = _compile(pattern)
    matched = compiled.fullmatch(response) if full_match else compiled.search(response)
    return 1.0 if matched else 0.0
