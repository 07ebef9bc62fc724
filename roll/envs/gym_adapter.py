"""`type: gymnasium`: any gymnasium environment with a discrete action space, seen as a text env.

    environment: {type: gymnasium, args: {env_id: FrozenLake-v1, make_kwargs: {is_slippery: false},
                  action_map: {left: 0, down: 1, right: 2, up: 3}}}

The observation text is the env's `render()` when it supports render_mode "ansi" (and `render_text`),
otherwise `str(observation)`. The policy's action text, optionally inside <answer></answer>, names an
action of `action_map` (case-insensitive) or is an action's integer; anything else is an invalid
action: the env is not stepped, the observation says what is allowed and the reward is
`invalid_penalty`. Actions are parsed like the bundled envs' (roll.envs.parsing: the first
<answer></answer>, ASCII digits only). A step after the episode ended is invalid and gets
EPISODE_OVER. gymnasium is an optional dependency (`pip install gymnasium`), imported on construction.
"""

import hashlib
from typing import Any, Literal, Optional

from roll.envs.base import StepResult
from roll.envs.parsing import (
    ParseError,
    check_float,
    check_int,
    episode_over,
    extract_answer,
    invalid_step,
    parse_int,
    preview,
)
from roll.envs.registry import register_env


@register_env("gymnasium")
class GymnasiumEnv:
    """A gymnasium env behind the text `Env` protocol of roll.envs.base (module docstring).

    `info["success"]` is `terminated and reward > 0` (a heuristic that fits goal-reaching envs such
    as FrozenLake), or `terminated and reward >= success_reward` when that is given.
    `info["state"]` is the observation text (`state_key="text"`) or a key of the raw gymnasium
    observation (`state_key="observation"`), which groups equal states better when the text shows
    more than the state (FrozenLake's render also names the last action).
    """

    def __init__(
        self,
        env_id: str,
        make_kwargs: Optional[dict[str, Any]] = None,
        action_map: Optional[dict[str, int]] = None,
        render_text: bool = True,
        invalid_penalty: float = 0.0,
        max_action_chars: int = 2000,
        success_reward: Optional[float] = None,
        state_key: Literal["text", "observation"] = "text",
    ) -> None:
        try:
            import gymnasium
        except ImportError:
            raise ImportError(
                f"env type 'gymnasium' (env_id={env_id!r}) needs the gymnasium package: pip install gymnasium"
            ) from None
        owner = f"gymnasium env {env_id!r}"
        if state_key not in ("text", "observation"):
            raise ValueError(
                f"{owner}: state_key={state_key!r} is invalid; set it to 'text' or 'observation'"
            )
        self.invalid_penalty = check_float(owner, "invalid_penalty", invalid_penalty)
        self.max_action_chars = check_int(owner, "max_action_chars", max_action_chars, 1)
        self.success_reward = (
            None if success_reward is None else check_float(owner, "success_reward", success_reward)
        )
        self.state_key = state_key
        kwargs = dict(make_kwargs or {})
        if render_text and "render_mode" not in kwargs and "ansi" in _render_modes(gymnasium, env_id):
            kwargs["render_mode"] = "ansi"
        self.env_id = env_id
        self._env = gymnasium.make(env_id, **kwargs)
        try:
            self._actions = _discrete_actions(owner, self._env.action_space, gymnasium)
            self._action_map = _normalise_action_map(owner, action_map or {}, self._actions)
        except ValueError:
            self._env.close()
            raise
        self._render = render_text and getattr(self._env, "render_mode", None) == "ansi"
        self._text = ""
        self._state: Any = ""
        self._started = self._done = False

    def reset(self, seed: int) -> tuple[str, dict[str, Any]]:
        """gymnasium's `reset(seed=seed)`; the same seed gives the same episode."""
        observation, gym_info = self._env.reset(seed=seed)
        self._observe(observation)
        self._started, self._done = True, False
        return self._text, {**gym_info, "success": False, "state": self._state}

    def step(self, action: str) -> StepResult:
        """Parse the action text and step the env; an invalid action leaves the env where it was."""
        if not self._started:
            raise RuntimeError(
                f"gymnasium env {self.env_id!r}: step called before reset(seed); call reset first"
            )
        if self._done:
            return episode_over(self._invalid_info())
        parsed = self._parse(action)
        if isinstance(parsed, ParseError):
            observation = f"Invalid action: {parsed.message}. {self.allowed_actions()}\n"
            return invalid_step(observation, self.invalid_penalty, self._invalid_info())
        observation, reward, terminated, truncated, gym_info = self._env.step(parsed)
        self._observe(observation)
        reward, terminated, truncated = float(reward), bool(terminated), bool(truncated)
        self._done = terminated or truncated
        if self.success_reward is None:
            success = terminated and reward > 0
        else:
            success = terminated and reward >= self.success_reward
        info = {**gym_info, "success": success, "invalid_action": False, "state": self._state}
        return StepResult(
            observation=self._text, reward=reward, terminated=terminated, truncated=truncated, info=info
        )

    def allowed_actions(self) -> str:
        """The sentence an invalid action gets: the action names and the integer actions."""
        numbers = f"an integer from {self._actions.start} to {self._actions.stop - 1}"
        if not self._action_map:
            return f"Answer with {numbers}."
        return f"Answer with one of: {', '.join(self._action_map)} (or {numbers})."

    def close(self) -> None:
        """Close the gymnasium env."""
        self._env.close()

    def _parse(self, action: Any) -> int | ParseError:
        text = extract_answer(action, self.max_action_chars)
        if isinstance(text, ParseError):
            return text
        name = text.lower()
        if name in self._action_map:
            return self._action_map[name]
        number = parse_int(text, self._actions.start, self._actions.stop - 1)
        if isinstance(number, ParseError) and self._action_map:
            return ParseError(
                f"{preview(text)} is not one of {', '.join(self._action_map)} nor an action number"
            )
        return number

    def _invalid_info(self) -> dict[str, Any]:
        return {"success": False, "invalid_action": True, "state": self._state}

    def _observe(self, observation: Any) -> None:
        self._text = str(self._env.render()) if self._render else str(observation)
        self._state = self._text if self.state_key == "text" else _observation_key(observation)


def _render_modes(gymnasium: Any, env_id: str) -> list[str]:
    """The render modes an env id declares, read from its class without building it ([] if unknown)."""
    entry_point = gymnasium.spec(env_id).entry_point
    if isinstance(entry_point, str):
        entry_point = gymnasium.envs.registration.load_env_creator(entry_point)
    metadata = getattr(entry_point, "metadata", None)
    return list(metadata.get("render_modes") or []) if isinstance(metadata, dict) else []


def _discrete_actions(owner: str, space: Any, gymnasium: Any) -> range:
    if not isinstance(space, gymnasium.spaces.Discrete):
        raise ValueError(f"{owner} has action space {space}; only Discrete action spaces map to text actions")
    return range(int(space.start), int(space.start) + int(space.n))


def _normalise_action_map(owner: str, action_map: dict[str, int], actions: range) -> dict[str, int]:
    normalised: dict[str, int] = {}
    for name, value in action_map.items():
        key = str(name).strip().lower()
        if not key or key in normalised:
            raise ValueError(
                f"{owner}: action_map name {name!r} is empty or repeats another name "
                "(names compare stripped and case-insensitive)"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value not in actions:
            raise ValueError(
                f"{owner}: action_map[{name!r}] = {value!r} is not an action of the "
                f"Discrete space, whose actions are {actions.start}..{actions.stop - 1}"
            )
        normalised[key] = value
    return normalised


def _observation_key(observation: Any) -> Any:
    """A hashable key of a raw gymnasium observation, stable across processes."""
    if isinstance(observation, (int, float, str)):
        return observation
    shape = getattr(observation, "shape", None)
    if shape == () and hasattr(observation, "item"):
        return observation.item()
    if shape is not None and hasattr(observation, "tobytes"):
        digest = hashlib.sha1(observation.tobytes()).hexdigest()
        return f"{observation.dtype}{tuple(shape)}:{digest}"
    return repr(observation)
