"""Environment role configuration (agentic RL): which envs, their tools, and the multi-turn limits.

    environment:
      envs:
        - {type: guess_number, args: {low: 1, high: 8}}
        - {type: "my_pkg.my_envs:MyEnv", args: {...}, tools: [{type: calculator}]}
      max_turns: 4

Env and tool types are registry names or `module.path:Class` import paths; their args are checked
against the class signatures by `validate.py` before any worker starts.
"""

from dataclasses import dataclass, field
from typing import Any

from roll.config.errors import ConfigError

OBSERVATION_FORMATS = ("plain", "chat")


@dataclass(kw_only=True)
class ToolSpec:
    """One tool the policy may call during an episode."""

    type: str = ""
    """Registry name (calculator | python) or import path "my_pkg.tools:MyTool"."""
    args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the tool's constructor."""

    def __post_init__(self) -> None:
        if not self.type:
            raise ConfigError(
                "tool type is empty; set type to a registered tool (calculator|python) or 'pkg.mod:Tool'"
            )


@dataclass(kw_only=True)
class EnvSpec:
    """One environment the rollouts of a step are drawn from (groups go round-robin over the list)."""

    type: str = ""
    """Registry name (guess_number | frozen_lake | sokoban | countdown | math | gymnasium) or "pkg.mod:MyEnv"."""
    args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the env's constructor."""
    name: str = ""
    """Name in metrics (env/<name>/...); defaults to the type's last component."""
    tools: list[ToolSpec] = field(default_factory=list)
    """Tools the policy may call in this env (<tool_call> JSON; results come back as observations)."""

    def __post_init__(self) -> None:
        self.tools = [ToolSpec(**t) if isinstance(t, dict) else t for t in self.tools]
        if not self.type:
            raise ConfigError(
                "env type is empty; set type to a registered env (e.g. guess_number) or 'pkg.mod:MyEnv'"
            )
        if not self.name:
            self.name = self.type.rsplit(":", 1)[-1].rsplit(".", 1)[-1]


@dataclass(kw_only=True)
class EnvironmentConfig:
    """The environment role: CPU workers hosting env instances, and the limits of one trajectory."""

    envs: list[EnvSpec] = field(default_factory=list)
    """Environments to train on; each step's groups go round-robin over them."""
    num_workers: int = 1
    """Environment worker processes (Ray actors, no devices)."""
    envs_per_worker: int = 64
    """Trajectories a worker runs at once (each holds one env instance)."""
    max_turns: int = 5
    """Policy turns per trajectory; reaching it ends the trajectory (reason max_turns)."""
    max_context_tokens: int = 1024
    """Token budget of a whole trajectory (prompt + every turn); reaching it ends it (context_full)."""
    max_invalid_actions: int = 0
    """End a trajectory after this many invalid actions (reason invalid_action); 0 never ends it."""
    step_timeout_s: float = 10.0
    """An env reset/step slower than this ends its trajectory (reason timeout); the step continues."""
    observation_format: str = "plain"
    """How observations become tokens: "plain" (text as is) | "chat" (incremental chat template turns)."""
    batch_wait_s: float = 0.02
    """A worker sends the turns waiting for the engine at once, or after this wait for stragglers."""
    val_episodes: int = 32
    """Held-out episodes per env at each validation (seeds disjoint from training seeds)."""
    val_sampled: bool = True
    """Also validate with sampling (generation.temperature), besides greedy."""

    def __post_init__(self) -> None:
        self.envs = [EnvSpec(**e) if isinstance(e, dict) else e for e in self.envs]
        if not self.envs:
            raise ConfigError("environment.envs is empty; add e.g. [{type: guess_number, args: {}}]")
        names = [e.name for e in self.envs]
        if len(set(names)) != len(names):
            raise ConfigError(f"environment.envs names {names} repeat; give each entry a distinct name")
        for key in ("num_workers", "envs_per_worker", "max_turns", "val_episodes"):
            if getattr(self, key) < 1:
                raise ConfigError(f"environment.{key}={getattr(self, key)} must be >= 1")
        if self.max_context_tokens < 2:
            raise ConfigError(f"environment.max_context_tokens={self.max_context_tokens} must be >= 2")
        if self.max_invalid_actions < 0:
            raise ConfigError(
                f"environment.max_invalid_actions={self.max_invalid_actions} must be >= 0 (0 never ends)"
            )
        if self.step_timeout_s <= 0 or self.batch_wait_s < 0:
            raise ConfigError(
                f"environment.step_timeout_s={self.step_timeout_s} must be > 0 and "
                f"batch_wait_s={self.batch_wait_s} >= 0"
            )
        if self.observation_format not in OBSERVATION_FORMATS:
            raise ConfigError(
                f"environment.observation_format={self.observation_format!r} is not one of plain|chat"
            )
