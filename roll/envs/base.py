"""The environment API of agentic RL: text in, text out, no knowledge of engines or tokens.

An environment is any class with gymnasium's method names and termination semantics:

    class MyEnv:
        def reset(self, seed: int) -> tuple[str, dict]:        # first observation, info
        def step(self, action: str) -> StepResult:             # the policy's text action
        def close(self) -> None:                               # optional

`terminated` means the task reached an end state (solved or failed for good); `truncated` means the
episode was cut for a reason outside the task (the env's own step limit). `info` is free-form; the
keys below have a meaning for the metrics and the rollout loop:

- `info["success"]` (bool): the episode solved the task (success rate in metrics and validation);
- `info["invalid_action"]` (bool): the action could not be parsed or was not allowed (invalid-action
  rate; `environment.max_invalid_actions` can end the trajectory);
- `info["state"]` (hashable, optional): a key of the state the *next* action is taken from; GiGPO
  groups steps of identical state across trajectories by it (default: the observation text).
"""

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(kw_only=True)
class StepResult:
    """What `Env.step` returns (gymnasium's 5-tuple, named)."""

    observation: str
    """Text shown to the policy before its next action (after the last step it is never shown)."""
    reward: float
    """Reward of this step; a trajectory's score is the sum over its steps."""
    terminated: bool
    """The task reached an end state (solved, or failed for good)."""
    truncated: bool
    """The env cut the episode for a reason outside the task (e.g. its own step limit)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Free-form; `success`, `invalid_action` and `state` are read by the metrics (module docstring)."""


@runtime_checkable
class Env(Protocol):
    """A text environment (see the module docstring); `close()` is optional."""

    def reset(self, seed: int) -> tuple[str, dict[str, Any]]:
        """Start an episode from the initial state `seed` determines; (observation, info)."""
        ...

    def step(self, action: str) -> StepResult:
        """Apply the policy's text action; malformed actions give an invalid-action observation."""
        ...


class EnvContractError(TypeError):
    """An environment returned values of the wrong type; the message names the env and the fix."""


def check_reset_result(name: str, result: Any) -> tuple[str, dict[str, Any]]:
    """`result` of `name`.reset(seed) as (observation, info), or EnvContractError naming what is wrong."""
    if not (isinstance(result, tuple) and len(result) == 2):
        raise EnvContractError(
            f"env {name!r}: reset(seed) returned {type(result).__name__}; return a tuple (observation: str, info: dict)"
        )
    observation, info = result
    if not isinstance(observation, str):
        raise EnvContractError(
            f"env {name!r}: reset(seed) returned an observation of type {type(observation).__name__}; return str"
        )
    if not isinstance(info, dict):
        raise EnvContractError(
            f"env {name!r}: reset(seed) returned info of type {type(info).__name__}; return a dict"
        )
    return observation, info


def check_step_result(name: str, result: Any) -> StepResult:
    """`result` of `name`.step(action) as a StepResult, or EnvContractError naming the bad field."""
    if not isinstance(result, StepResult):
        raise EnvContractError(
            f"env {name!r}: step(action) returned {type(result).__name__}; return "
            "roll.envs.StepResult(observation=..., reward=..., terminated=..., truncated=..., info=...)"
        )
    if not isinstance(result.observation, str):
        raise EnvContractError(
            f"env {name!r}: StepResult.observation is {type(result.observation).__name__}; it must be str"
        )
    if isinstance(result.reward, bool) or not isinstance(result.reward, (int, float)):
        raise EnvContractError(
            f"env {name!r}: StepResult.reward is {type(result.reward).__name__}; it must be a float"
        )
    for flag in ("terminated", "truncated"):
        if not isinstance(getattr(result, flag), bool):
            raise EnvContractError(
                f"env {name!r}: StepResult.{flag} is {type(getattr(result, flag)).__name__}; it must be bool"
            )
    if not isinstance(result.info, dict):
        raise EnvContractError(
            f"env {name!r}: StepResult.info is {type(result.info).__name__}; it must be a dict"
        )
    return result
