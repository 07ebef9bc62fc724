"""Scripted teachers that play environments, for SFT warm starts of agentic RL (text only).

`teacher_sft_rows` plays episodes with a teacher policy and turns every teacher action into an SFT
row `{prompt: everything the policy saw before acting, completion: the action}`, i.e. the
per-turn loss of a multi-turn SFT on the teacher's trajectories. The text is the concatenation
that `observation_format: plain` feeds the engine, so the SFT'd policy sees in RL exactly the
token layout it was trained on (for tokenizers that round-trip text, like the quickstart's).

`sloppy_guesser` is the quickstart's teacher for guess_number: binary search with probability
1 - noise_rate, otherwise the lowest number still possible (a linear scan); its mistakes cost
turns, so success within a turn budget leaves room for RL to improve on the imitated policy.
"""

import random
from collections.abc import Callable
from typing import Any

from roll.envs.base import Env

# A teacher maps (history of (observation, action) pairs, current observation, rng) to an action.
Teacher = Callable[[list[tuple[str, str]], str, random.Random], str]


def teacher_sft_rows(
    env: Env, teacher: Teacher, seeds: list[int], *, max_turns: int, rng: random.Random
) -> tuple[list[dict[str, Any]], float]:
    """SFT rows of the teacher's actions on `seeds`, and the teacher's success rate."""
    rows: list[dict[str, Any]] = []
    successes = 0
    for seed in seeds:
        observation, _ = env.reset(seed)
        transcript = ""
        history: list[tuple[str, str]] = []
        for _ in range(max_turns):
            transcript += observation
            action = teacher(history, observation, rng)
            rows.append({"prompt": transcript, "completion": action})
            history.append((observation, action))
            transcript += action
            result = env.step(action)
            observation = result.observation
            if result.terminated or result.truncated:
                successes += bool(result.info.get("success"))
                break
    return rows, successes / max(1, len(seeds))


def sloppy_guesser(low: int, high: int, noise_rate: float) -> Teacher:
    """guess_number teacher: midpoint of the feasible interval, or (with `noise_rate`) its low end.

    Actions end with a newline, the stop token of the quickstart's generation config."""

    def act(history: list[tuple[str, str]], observation: str, rng: random.Random) -> str:
        lo, hi = low, high
        for (_, action), feedback in zip(history, [obs for obs, _ in history[1:]] + [observation]):
            guess = int(action)
            if "too low" in feedback:
                lo = max(lo, guess + 1)
            elif "too high" in feedback:
                hi = min(hi, guess - 1)
        guess = lo if rng.random() < noise_rate else (lo + hi) // 2
        return f"{guess}\n"

    return act
