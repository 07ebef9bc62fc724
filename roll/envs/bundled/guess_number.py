"""`guess_number`: find a hidden integer in [low, high] from "too low" / "too high" feedback.

    reset:  "Guess a number from 1 to 8.\\n"
    step:   "5" or "<answer>5</answer>"  ->  "5 is too low.\\n" | "5 is too high.\\n" | "5 is correct!\\n"

Reward 1.0 for the correct guess (terminated, success), else 0.0; `invalid_penalty` for an action
that is not one integer in [low, high] ("4 or 5", "four", "4.5", ""), which changes nothing and
does not count as a guess. After `max_guesses` wrong guesses the episode is truncated.
`info["state"]` is the interval still consistent with the feedback, e.g. "3-8".
"""

import random
from typing import Any

from roll.envs.base import StepResult
from roll.envs.parsing import (
    ParseError,
    check_float,
    check_int,
    episode_over,
    extract_answer,
    invalid_step,
    parse_int,
)
from roll.envs.registry import register_env


@register_env("guess_number")
class GuessNumber:
    """Binary-search game over a seeded hidden integer (see the module docstring)."""

    def __init__(
        self,
        low: int = 1,
        high: int = 8,
        max_guesses: int = 8,
        invalid_penalty: float = 0.0,
        max_action_chars: int = 2000,
    ) -> None:
        name = "guess_number"
        self.low = check_int(name, "low", low, -(10**18), 10**18)
        self.high = check_int(name, "high", high, -(10**18), 10**18)
        if self.high <= self.low:
            raise ValueError(f"{name}: high={high} must be greater than low={low}; widen the range")
        self.max_guesses = check_int(name, "max_guesses", max_guesses, 1)
        self.invalid_penalty = check_float(name, "invalid_penalty", invalid_penalty)
        self.max_action_chars = check_int(name, "max_action_chars", max_action_chars, 1)
        self._target: int | None = None
        self._feasible = (self.low, self.high)
        self._guesses = 0
        self._done = False
        self._success = False

    def reset(self, seed: int) -> tuple[str, dict[str, Any]]:
        """Draw the hidden number from `seed`; the observation states the range."""
        self._target = random.Random(seed).randint(self.low, self.high)
        self._feasible = (self.low, self.high)
        self._guesses = 0
        self._done = False
        self._success = False
        return f"Guess a number from {self.low} to {self.high}.\n", {"success": False, "state": self._state()}

    def step(self, action: str) -> StepResult:
        """Score one guess; see the module docstring for the observations and rewards."""
        if self._target is None:
            raise RuntimeError("GuessNumber.step called before reset(seed); call reset first")
        if self._done:
            return episode_over(self._info(True))
        text = extract_answer(action, self.max_action_chars)
        guess = parse_int(text, self.low, self.high) if isinstance(text, str) else text
        if isinstance(guess, ParseError):
            observation = (
                f"Invalid guess: {guess.message}. Answer with one integer from {self.low} to {self.high}.\n"
            )
            return invalid_step(observation, self.invalid_penalty, self._info(True))
        self._guesses += 1
        lo, hi = self._feasible
        if guess == self._target:
            self._feasible = (guess, guess)
            self._done = self._success = True
            return StepResult(
                observation=f"{guess} is correct!\n",
                reward=1.0,
                terminated=True,
                truncated=False,
                info=self._info(False),
            )
        if guess < self._target:
            self._feasible = (max(lo, guess + 1), hi)
            observation = f"{guess} is too low.\n"
        else:
            self._feasible = (lo, min(hi, guess - 1))
            observation = f"{guess} is too high.\n"
        truncated = self._guesses >= self.max_guesses
        self._done = truncated
        return StepResult(
            observation=observation, reward=0.0, terminated=False, truncated=truncated, info=self._info(False)
        )

    def _state(self) -> str:
        return f"{self._feasible[0]}-{self._feasible[1]}"

    def _info(self, invalid: bool) -> dict[str, Any]:
        return {"success": self._success, "invalid_action": invalid, "state": self._state()}
