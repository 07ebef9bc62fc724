"""Environments for agentic RL: the text-in/text-out `Env` protocol, registries of envs and tools,
bundled envs (roll/envs/bundled/), adapters (gymnasium, GEM) and the python sandbox.

    from roll.envs import Env, StepResult, register_env, register_tool
"""

from roll.envs.base import Env, StepResult
from roll.envs.registry import register_env, register_tool

__all__ = ["Env", "StepResult", "register_env", "register_tool"]
