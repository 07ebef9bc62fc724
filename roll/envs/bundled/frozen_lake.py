"""`frozen_lake`: walk a seeded grid from S to G without falling into a hole H.

Maps are generated from the reset seed: start and goal on distinct random cells and
round(hole_fraction * (size * size - 2)) holes on others; a map with no path from S to G is
redrawn from the same RNG, so every map is solvable. The grid is rendered one row per line:

    S start   F frozen   H hole   G goal   P the player (drawn over the cell it stands on)

    reset:  "You are P. Reach G without stepping into a hole H. Actions: left, down, right, up.\\nPFFF\\n...\\n"
    step:   "right" or "<answer>Right</answer>"  ->  the grid, plus "You reached the goal!" or
            "You fell into a hole." when the episode ends there

A move off the edge leaves the player in place (a valid action). With `slippery`, the player moves
in the intended direction or either perpendicular one with probability 1/3 each, drawn from the
RNG seeded at reset (same seed and actions -> same trajectory). Reward 1.0 on reaching G
(terminated, success); a hole terminates with 0.0. Invalid actions give `invalid_penalty`, change
nothing and do not count towards `max_steps`; after `max_steps` moves the episode is truncated.
`info["state"]` is the rendered grid.
"""

import random
from collections import deque
from typing import Any

from roll.envs.base import StepResult
from roll.envs.parsing import (
    ParseError,
    check_float,
    check_int,
    episode_over,
    extract_answer,
    invalid_step,
    limited_step,
    parse_choice,
)
from roll.envs.registry import register_env

ACTIONS = ("left", "down", "right", "up")
MOVES = {"left": (0, -1), "down": (1, 0), "right": (0, 1), "up": (-1, 0)}
# The two directions a slippery step may turn into besides the intended one.
PERPENDICULAR = {
    "left": ("up", "down"),
    "right": ("down", "up"),
    "up": ("left", "right"),
    "down": ("right", "left"),
}
_MAX_MAP_DRAWS = 10_000


def reachable(grid: list[str], start: tuple[int, int]) -> set[tuple[int, int]]:
    """Cells reachable from `start` by moves that never enter a hole (BFS over the grid rows)."""
    size = len(grid)
    seen = {start}
    queue = deque([start])
    while queue:
        row, col = queue.popleft()
        for d_row, d_col in MOVES.values():
            nxt = (row + d_row, col + d_col)
            if 0 <= nxt[0] < size and 0 <= nxt[1] < size and nxt not in seen and grid[nxt[0]][nxt[1]] != "H":
                seen.add(nxt)
                queue.append(nxt)
    return seen


def generate_map(size: int, hole_fraction: float, rng: random.Random) -> list[str]:
    """A solvable size x size map of S/F/H/G rows drawn from `rng` (see the module docstring)."""
    cells = [(row, col) for row in range(size) for col in range(size)]
    num_holes = round(hole_fraction * (size * size - 2))
    for _ in range(_MAX_MAP_DRAWS):
        start, goal, *holes = rng.sample(cells, 2 + num_holes)
        grid = [["F"] * size for _ in range(size)]
        grid[start[0]][start[1]] = "S"
        grid[goal[0]][goal[1]] = "G"
        for row, col in holes:
            grid[row][col] = "H"
        rows = ["".join(line) for line in grid]
        if goal in reachable(rows, start):
            return rows
    raise RuntimeError(
        f"frozen_lake: no solvable {size}x{size} map with hole_fraction={hole_fraction} in "
        f"{_MAX_MAP_DRAWS} draws; lower hole_fraction"
    )


@register_env("frozen_lake")
class FrozenLake:
    """Grid walk over a seeded, always-solvable frozen lake (see the module docstring)."""

    def __init__(
        self,
        size: int = 4,
        hole_fraction: float = 0.2,
        slippery: bool = False,
        max_steps: int | None = None,
        invalid_penalty: float = 0.0,
        max_action_chars: int = 2000,
    ) -> None:
        """`max_steps` None means 4 * size moves."""
        name = "frozen_lake"
        self.size = check_int(name, "size", size, 2, 32)
        self.hole_fraction = check_float(name, "hole_fraction", hole_fraction, 0.0, 0.6)
        if not isinstance(slippery, bool):
            raise ValueError(f"{name}: slippery={slippery!r} is invalid; set slippery to true or false")
        self.slippery = slippery
        self.max_steps = 4 * self.size if max_steps is None else check_int(name, "max_steps", max_steps, 1)
        self.invalid_penalty = check_float(name, "invalid_penalty", invalid_penalty)
        self.max_action_chars = check_int(name, "max_action_chars", max_action_chars, 1)
        self._rng = random.Random(0)
        self._grid: list[str] = []
        self._player = (0, 0)
        self._steps = 0
        self._done = False
        self._success = False

    def reset(self, seed: int) -> tuple[str, dict[str, Any]]:
        """Generate the map from `seed`; the observation is the instruction line and the grid."""
        self._rng = random.Random(seed)
        self._grid = generate_map(self.size, self.hole_fraction, self._rng)
        self._player = next(
            (r, c) for r, line in enumerate(self._grid) for c, cell in enumerate(line) if cell == "S"
        )
        self._steps = 0
        self._done = False
        self._success = False
        instruction = f"You are P. Reach G without stepping into a hole H. Actions: {', '.join(ACTIONS)}.\n"
        return instruction + self.render(), {"success": False, "state": self.render()}

    def step(self, action: str) -> StepResult:
        """Move the player; see the module docstring for the observations and rewards."""
        if not self._grid:
            raise RuntimeError("FrozenLake.step called before reset(seed); call reset first")
        if self._done:
            return episode_over(self._info(True))
        text = extract_answer(action, self.max_action_chars)
        move = parse_choice(text, ACTIONS) if isinstance(text, str) else text
        if isinstance(move, ParseError):
            observation = f"Invalid action: {move.message}. Answer with one of: {', '.join(ACTIONS)}.\n"
            return invalid_step(observation, self.invalid_penalty, self._info(True))
        if self.slippery:
            move = self._rng.choice((move, *PERPENDICULAR[move]))
        d_row, d_col = MOVES[move]
        row, col = self._player[0] + d_row, self._player[1] + d_col
        if 0 <= row < self.size and 0 <= col < self.size:
            self._player = (row, col)
        self._steps += 1
        cell = self._grid[self._player[0]][self._player[1]]
        observation, reward, terminated = self.render(), 0.0, False
        if cell == "G":
            observation, reward, terminated = observation + "You reached the goal!\n", 1.0, True
            self._success = True
        elif cell == "H":
            observation, terminated = observation + "You fell into a hole.\n", True
        result = limited_step(
            observation, reward, terminated, self._steps >= self.max_steps, self._info(False)
        )
        self._done = result.terminated or result.truncated
        return result

    def render(self) -> str:
        """The grid with P on the player's cell, one row per line, ending with a newline."""
        rows = list(self._grid)
        row, col = self._player
        rows[row] = rows[row][:col] + "P" + rows[row][col + 1 :]
        return "\n".join(rows) + "\n"

    def _info(self, invalid: bool) -> dict[str, Any]:
        return {"success": self._success, "invalid_action": invalid, "state": self.render()}
