"""Bundled environments and tools; each module registers its classes on import.

Envs: guess_number, frozen_lake, sokoban, countdown, math; adapters: gymnasium (roll/envs/gym_adapter.py).
Tools: calculator, python (sandboxed).
"""

from roll.envs import gym_adapter
from roll.envs.bundled import countdown, frozen_lake, guess_number, math_env, sokoban, tools

__all__ = ["countdown", "frozen_lake", "guess_number", "gym_adapter", "math_env", "sokoban", "tools"]
