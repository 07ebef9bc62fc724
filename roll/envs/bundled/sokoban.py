"""`sokoban`: push every box onto a target in a seeded, always-solvable room.

Symbols (ASCII, one row per line):

    # wall   _ floor   O target   X box   * box on target   P player   S player on target

A level is generated from the reset seed: a dim x dim room walled on its border with a few
interior walls (floor kept connected), `num_boxes` targets with a box on each and the player on
another floor cell; then `search_depth` random reverse moves (walk, or pull the box behind the
player one cell) move the boxes away. Each reverse move undoes a legal forward move, so the level
is solvable in at most `search_depth` moves; `solve` (BFS) double-checks it and an unsolvable or
already-solved level is redrawn from the same RNG. Fixed `levels` (rendered text) may be given
instead; reset then picks levels[seed % len(levels)].

    reset:  "Push every box X onto a target O. Symbols: ... Actions: up, down, left, right.\\n#####\\n#P_X#\\n...\\n"
    step:   "up" or "<answer>Up</answer>"  ->  the grid, plus "All boxes are on targets!" or
            "Out of steps." when the episode ends

Rules: the player pushes one box ahead of it; a move into a wall, or pushing a box into a wall or
another box, is a valid action that changes nothing (it still costs a step). Rewards per valid
move: `step_penalty` (default 0.0), +`box_reward` when a push puts a box on a target and
-`box_reward` when it pushes one off (default 0.0, so pushing on and off cannot farm reward),
+1.0 when every box is on a target (terminated, success). Invalid actions give `invalid_penalty`,
change nothing and do not count towards `max_steps`. `info["state"]` is the rendered grid.
"""

import random
from collections import deque
from dataclasses import dataclass, replace
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

Pos = tuple[int, int]
ACTIONS = ("up", "down", "left", "right")
MOVES: dict[str, Pos] = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
LEGEND = "# wall, _ floor, O target, X box, * box on target, P you, S you on target"
_SYMBOLS = {"#", "_", "O", "X", "*", "P", "S"}
_MAX_LEVEL_DRAWS = 1000


@dataclass(frozen=True)
class Level:
    """One Sokoban position: the fixed room (walls, targets) and the movable boxes and player."""

    height: int
    width: int
    walls: frozenset[Pos]
    targets: frozenset[Pos]
    boxes: frozenset[Pos]
    player: Pos

    @property
    def solved(self) -> bool:
        """Every box stands on a target."""
        return self.boxes == self.targets

    def blocked(self, pos: Pos) -> bool:
        """`pos` is a wall or outside the room."""
        return pos in self.walls or not (0 <= pos[0] < self.height and 0 <= pos[1] < self.width)

    def render(self) -> str:
        """The grid in the module's symbols, one row per line, ending with a newline."""
        rows = []
        for r in range(self.height):
            row = []
            for c in range(self.width):
                pos = (r, c)
                on_target = pos in self.targets
                if pos in self.walls:
                    row.append("#")
                elif pos == self.player:
                    row.append("S" if on_target else "P")
                elif pos in self.boxes:
                    row.append("*" if on_target else "X")
                else:
                    row.append("O" if on_target else "_")
            rows.append("".join(row))
        return "\n".join(rows) + "\n"

    @classmethod
    def from_text(cls, text: str) -> "Level":
        """Parse a rendered level; ValueError says what is malformed."""
        rows = [line for line in text.strip("\n").split("\n")]
        if not rows or any(len(row) != len(rows[0]) for row in rows) or not rows[0]:
            raise ValueError("rows must be non-empty and of equal length")
        cells = {(r, c): ch for r, row in enumerate(rows) for c, ch in enumerate(row)}
        unknown = sorted({ch for ch in cells.values() if ch not in _SYMBOLS})
        if unknown:
            raise ValueError(f"unknown symbols {unknown}; use {LEGEND}")
        players = [pos for pos, ch in cells.items() if ch in "PS"]
        if len(players) != 1:
            raise ValueError(f"needs exactly one player (P or S), found {len(players)}")
        level = cls(
            height=len(rows),
            width=len(rows[0]),
            walls=frozenset(pos for pos, ch in cells.items() if ch == "#"),
            targets=frozenset(pos for pos, ch in cells.items() if ch in "O*S"),
            boxes=frozenset(pos for pos, ch in cells.items() if ch in "X*"),
            player=players[0],
        )
        if not level.boxes or len(level.boxes) != len(level.targets):
            raise ValueError(
                f"needs as many boxes as targets, at least one; found {len(level.boxes)} and {len(level.targets)}"
            )
        return level


def move(level: Level, action: str) -> tuple[Level, int]:
    """`level` after the player tries `action` and the change in boxes on targets (-1, 0, +1).

    A blocked move returns `level` itself.
    """
    d_row, d_col = MOVES[action]
    nxt = (level.player[0] + d_row, level.player[1] + d_col)
    if level.blocked(nxt):
        return level, 0
    if nxt not in level.boxes:
        return replace(level, player=nxt), 0
    beyond = (nxt[0] + d_row, nxt[1] + d_col)
    if level.blocked(beyond) or beyond in level.boxes:
        return level, 0
    boxes = (level.boxes - {nxt}) | {beyond}
    delta = (beyond in level.targets) - (nxt in level.targets)
    return replace(level, boxes=boxes, player=nxt), delta


def solve(level: Level, max_depth: int, max_states: int = 200_000) -> list[str] | None:
    """A shortest list of actions solving `level` in at most `max_depth` moves, or None.

    Breadth-first over (player, boxes); also None when more than `max_states` states were seen.
    """
    start = (level.player, level.boxes)
    parents: dict[tuple[Pos, frozenset[Pos]], tuple[tuple[Pos, frozenset[Pos]], str] | None] = {start: None}
    frontier = [level]
    for _ in range(max_depth + 1):
        next_frontier = []
        for current in frontier:
            key = (current.player, current.boxes)
            if current.solved:
                path: list[str] = []
                link = parents[key]
                while link is not None:
                    key, action = link
                    path.append(action)
                    link = parents[key]
                return path[::-1]
            for action in ACTIONS:
                child, _ = move(current, action)
                child_key = (child.player, child.boxes)
                if child_key not in parents:
                    parents[child_key] = (key, action)
                    next_frontier.append(child)
            if len(parents) > max_states:
                return None
        frontier = next_frontier
    return None


def _connected(floor: set[Pos]) -> bool:
    start = next(iter(floor))
    seen = {start}
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        for d_row, d_col in MOVES.values():
            nxt = (r + d_row, c + d_col)
            if nxt in floor and nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return len(seen) == len(floor)


def _reverse_play(room: Level, steps: int, rng: random.Random) -> Level:
    """Walk and pull boxes off their targets for `steps` random moves; the most scattered position.

    When a pull is possible it is taken half of the time (pure random walks mostly shuffle the
    player and leave one-push levels). Boxes keep identities here (index i started on target i) so
    "scattered" is the summed distance of each box from its own target; ties go to the latest.
    """
    origins = sorted(room.targets)
    boxes = list(origins)
    player = room.player
    best, best_score = room, 0
    for _ in range(steps):
        walks: list[tuple[Pos, int | None]] = []
        pulls: list[tuple[Pos, int | None]] = []
        for d_row, d_col in MOVES.values():
            nxt = (player[0] + d_row, player[1] + d_col)
            if room.blocked(nxt) or nxt in boxes:
                continue
            walks.append((nxt, None))
            behind = (player[0] - d_row, player[1] - d_col)
            if behind in boxes:
                pulls.append((nxt, boxes.index(behind)))
        if not walks:
            break
        nxt, pulled = rng.choice(pulls) if pulls and rng.random() < 0.5 else rng.choice(walks + pulls)
        if pulled is not None:
            boxes[pulled] = player
        player = nxt
        score = sum(abs(b[0] - t[0]) + abs(b[1] - t[1]) for b, t in zip(boxes, origins))
        if score > 0 and score >= best_score:
            best, best_score = replace(room, boxes=frozenset(boxes), player=player), score
    return best


def generate_level(dim: int, num_boxes: int, search_depth: int, rng: random.Random) -> Level:
    """A solvable, unsolved dim x dim level drawn from `rng` (see the module docstring)."""
    border = {(r, c) for r in range(dim) for c in range(dim) if r in (0, dim - 1) or c in (0, dim - 1)}
    inner = sorted({(r, c) for r in range(dim) for c in range(dim)} - border)
    for _ in range(_MAX_LEVEL_DRAWS):
        floor = set(inner)
        for _ in range(rng.randint(0, len(inner) // 5)):
            cell = rng.choice(inner)
            if cell in floor and len(floor) > num_boxes + 2 and _connected(floor - {cell}):
                floor.discard(cell)
        spots = rng.sample(sorted(floor), num_boxes + 1)
        targets = frozenset(spots[1:])
        walls = frozenset(border | (set(inner) - floor))
        room = Level(height=dim, width=dim, walls=walls, targets=targets, boxes=targets, player=spots[0])
        level = _reverse_play(room, search_depth, rng)
        if not level.solved and solve(level, search_depth) is not None:
            return level
    raise RuntimeError(
        f"sokoban: no solvable level for dim={dim}, num_boxes={num_boxes}, search_depth={search_depth} in "
        f"{_MAX_LEVEL_DRAWS} draws; raise dim or search_depth, or lower num_boxes"
    )


@register_env("sokoban")
class Sokoban:
    """Box-pushing puzzle over seeded, always-solvable levels (see the module docstring)."""

    def __init__(
        self,
        dim: int = 6,
        num_boxes: int = 1,
        max_steps: int | None = None,
        search_depth: int = 30,
        invalid_penalty: float = 0.0,
        step_penalty: float = 0.0,
        box_reward: float = 0.0,
        levels: list[str] | None = None,
        max_action_chars: int = 2000,
    ) -> None:
        """`max_steps` None means 2 * search_depth moves; `levels` replaces generation (module docstring)."""
        name = "sokoban"
        self.dim = check_int(name, "dim", dim, 5, 16)
        self.num_boxes = check_int(name, "num_boxes", num_boxes, 1, (self.dim - 2) ** 2 // 4)
        self.search_depth = check_int(name, "search_depth", search_depth, 1, 1000)
        self.max_steps = (
            2 * self.search_depth if max_steps is None else check_int(name, "max_steps", max_steps, 1)
        )
        self.invalid_penalty = check_float(name, "invalid_penalty", invalid_penalty)
        self.step_penalty = check_float(name, "step_penalty", step_penalty)
        self.box_reward = check_float(name, "box_reward", box_reward)
        self.max_action_chars = check_int(name, "max_action_chars", max_action_chars, 1)
        self.levels: list[Level] | None = None
        if levels is not None:
            if not isinstance(levels, list) or not levels:
                raise ValueError(
                    f"{name}: levels={levels!r} is invalid; give a non-empty list of level strings"
                )
            self.levels = []
            for i, text in enumerate(levels):
                try:
                    if not isinstance(text, str):
                        raise ValueError(f"got {type(text).__name__}, not a string")
                    level = Level.from_text(text)
                    if level.solved:
                        raise ValueError("it is already solved")
                except ValueError as err:
                    raise ValueError(f"{name}: levels[{i}] is invalid: {err}; fix or remove it") from None
                self.levels.append(level)
        self._level: Level | None = None
        self._steps = 0
        self._done = False

    @property
    def level(self) -> Level:
        """The current position (after reset)."""
        if self._level is None:
            raise RuntimeError("Sokoban.level read before reset(seed); call reset first")
        return self._level

    def reset(self, seed: int) -> tuple[str, dict[str, Any]]:
        """Generate (or pick) the level for `seed`; the observation is the instruction line and the grid."""
        if self.levels is not None:
            self._level = self.levels[seed % len(self.levels)]
        else:
            self._level = generate_level(self.dim, self.num_boxes, self.search_depth, random.Random(seed))
        self._steps = 0
        self._done = False
        instruction = f"Push every box X onto a target O. Symbols: {LEGEND}. Actions: {', '.join(ACTIONS)}.\n"
        return instruction + self._level.render(), {"success": False, "state": self._level.render()}

    def step(self, action: str) -> StepResult:
        """Move (and maybe push); see the module docstring for the observations and rewards."""
        level = self.level
        if self._done:
            return episode_over(self._info(True))
        text = extract_answer(action, self.max_action_chars)
        choice = parse_choice(text, ACTIONS) if isinstance(text, str) else text
        if isinstance(choice, ParseError):
            observation = f"Invalid action: {choice.message}. Answer with one of: {', '.join(ACTIONS)}.\n"
            return invalid_step(observation, self.invalid_penalty, self._info(True))
        self._level, on_target_delta = move(level, choice)
        self._steps += 1
        reward = self.step_penalty + self.box_reward * on_target_delta
        observation = self._level.render()
        terminated = self._level.solved
        if terminated:
            reward += 1.0
            observation += "All boxes are on targets!\n"
        result = limited_step(
            observation, reward, terminated, self._steps >= self.max_steps, self._info(False)
        )
        self._done = result.terminated or result.truncated
        return result

    def _info(self, invalid: bool) -> dict[str, Any]:
        level = self.level
        return {"success": level.solved, "invalid_action": invalid, "state": level.render()}
