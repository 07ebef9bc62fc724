"""Bundled text envs (guess_number, frozen_lake, sokoban, countdown, math) and their action parsing.

Per env: seeded determinism, different seeds giving different states, a solving action sequence
found independently of the env (binary search, BFS over the rendered grid, the Sokoban BFS solver
replayed through step, the generating expression, answers recomputed from the question text),
adversarial actions being invalid without raising or changing the state, and steps after the end.
"""

import json
import re
import time
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import pytest

from roll.envs.base import StepResult, check_reset_result, check_step_result
from roll.envs.bundled.countdown import Countdown
from roll.envs.bundled.frozen_lake import FrozenLake
from roll.envs.bundled.guess_number import GuessNumber
from roll.envs.bundled.math_env import MathEnv
from roll.envs.bundled.sokoban import Level, Sokoban, solve
from roll.envs.parsing import EPISODE_OVER, ParseError, extract_answer, parse_choice, parse_int, parse_number
from roll.envs.registry import ENVS

PENALTY = -0.25
GRID_MOVES = {"left": (0, -1), "down": (1, 0), "right": (0, 1), "up": (-1, 0)}


def run(env: Any, seed: int, actions: list[str]) -> tuple[str, list[StepResult]]:
    observation, info = check_reset_result("test", env.reset(seed))
    assert observation.endswith("\n") and info["success"] is False and "state" in info
    results = []
    for action in actions:
        result = check_step_result("test", env.step(action))
        assert result.observation.endswith("\n")
        assert isinstance(result.info["success"], bool) and isinstance(result.info["invalid_action"], bool)
        hash(result.info["state"])
        results.append(result)
    return observation, results


def grid_of(observation: str) -> list[str]:
    """The grid rows of a frozen_lake / sokoban observation (lines made only of map symbols)."""
    return [line for line in observation.splitlines() if line and set(line) <= set("SFHGP#_OX*")]


def find(grid: list[str], symbols: str) -> list[tuple[int, int]]:
    return [(r, c) for r, row in enumerate(grid) for c, ch in enumerate(row) if ch in symbols]


def numbers_and_target(observation: str) -> tuple[list[int], int]:
    match = re.match(r"Numbers: ([\d ]+)\. Target: (\d+)\.", observation)
    assert match, observation
    return [int(n) for n in match.group(1).split()], int(match.group(2))


# --------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "action, expected",
    [
        ("4", "4"),
        (" 4\n", "4"),
        ("think... <answer> 4 </answer> done", "4"),
        ("<answer>4</answer><answer>5</answer>", "4"),
        ("<answer>4", ParseError),
        ("4</answer>", ParseError),
        ("<answer><answer>4</answer></answer>", ParseError),
        ("<answer>  </answer>", ParseError),
        ("", ParseError),
        ("x" * 100_000, ParseError),
        (None, ParseError),
        (b"4", ParseError),
    ],
)
def test_extract_answer(action, expected):
    result = extract_answer(action, max_chars=2000)
    if expected is ParseError:
        assert isinstance(result, ParseError) and result.message
    else:
        assert result == expected


def test_extract_answer_require_tag_and_overlong_is_constant_time():
    assert isinstance(extract_answer("42", require_tag=True), ParseError)
    assert extract_answer("so <answer>42</answer>", require_tag=True) == "42"
    start = time.perf_counter()
    assert isinstance(extract_answer("<answer>" * 1_000_000, max_chars=2000), ParseError)
    assert time.perf_counter() - start < 0.05


@pytest.mark.parametrize(
    "text, expected",
    [
        ("4", 4),
        ("+4", 4),
        ("004", 4),
        ("8", 8),
        ("9", None),
        ("0", None),
        ("4.5", None),
        ("4 5", None),
        ("four", None),
        ("٤", None),
        ("１", None),
        ("9" * 5000, None),
        ("-" + "0" * 3000 + "1", None),
    ],
)
def test_parse_int(text, expected):
    result = parse_int(text, 1, 8)
    if expected is None:
        assert isinstance(result, ParseError)
    else:
        assert result == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("42", Fraction(42)),
        ("1,200", Fraction(1200)),
        ("$5", Fraction(5)),
        ("3/4", Fraction(3, 4)),
        ("0.75", Fraction(3, 4)),
        ("-.5", Fraction(-1, 2)),
        ("42.", Fraction(42)),
        ("3/0", None),
        ("1e5", None),
        ("1e999999999", None),
        ("nan", None),
        ("NaN", None),
        ("inf", None),
        ("٣", None),
        ("0x10", None),
        ("1" * 100, None),
        ("3 apples", None),
    ],
)
def test_parse_number(text, expected):
    result = parse_number(text)
    if expected is None:
        assert isinstance(result, ParseError)
    else:
        assert result == expected


def test_parse_choice():
    assert parse_choice(" LeFt ", ("left", "right")) == "left"
    assert isinstance(parse_choice("left right", ("left", "right")), ParseError)
    assert isinstance(parse_choice("", ("left", "right")), ParseError)


# ----------------------------------------------------------------------------------- shared contracts

# Invalid for every env: no env may raise, reward, end the episode or change state on any of these.
ADVERSARIAL = [
    "",
    "   \n\t",
    "<answer>",
    "<answer>4",
    "</answer>",
    "4</answer>",
    "<answer></answer>",
    "<answer><answer>4</answer></answer>",
    "x" * 100_000,
    "<answer>up</answer>" + " " * 100_000,
    "1" * 100_000,
    "__import__('os').system('ls')",
    "<answer>__import__('os').system('ls')</answer>",
    "<answer>9**9**9</answer>",
    "<answer>9 ** 9 ** 9 ** 9</answer>",
    "<answer>٤</answer>",
    "<answer>１２</answer>",
    "<answer>NaN</answer>",
    "<answer>inf</answer>",
    "<answer>1e999999999</answer>",
    "<answer>" + "9" * 1500 + "</answer>",
    "<answer>(1</answer>",
    "<answer>\x00</answer>",
    "<answer>🙂</answer>",
    "<answer>up down</answer>",
    None,
]

ENV_FACTORIES: dict[str, Callable[[], Any]] = {
    "guess_number": lambda: GuessNumber(invalid_penalty=PENALTY),
    "frozen_lake": lambda: FrozenLake(invalid_penalty=PENALTY),
    "frozen_lake_slippery": lambda: FrozenLake(invalid_penalty=PENALTY, slippery=True),
    "sokoban": lambda: Sokoban(invalid_penalty=PENALTY),
    "countdown": lambda: Countdown(invalid_penalty=PENALTY),
    "math": lambda: MathEnv(invalid_penalty=PENALTY, max_attempts=3),
}


def some_actions(name: str, observation: str) -> list[str]:
    """A mixed trajectory (valid, wrong and invalid actions) that need not end the episode."""
    if name == "guess_number":
        return ["4", "nope", "<answer>2</answer>", "6", "3"]
    if name.startswith("frozen_lake") or name == "sokoban":
        return ["left", "UP", "jump", "<answer>right</answer>", "down", "down", "left"]
    if name == "countdown":
        a, b, c = numbers_and_target(observation)[0]
        return [f"{a} + {b}", f"{a} * {b} - {c}", "oops", f"({a} - {b}) * {c}"]
    return ["<answer>123456</answer>", "7", "<answer>-1/3</answer>"]


@pytest.mark.parametrize("name", ENV_FACTORIES)
def test_same_seed_same_trajectory(name):
    factory = ENV_FACTORIES[name]
    for seed in (0, 7, 12345):
        env_a, env_b = factory(), factory()
        observation = env_a.reset(seed)[0]
        actions = some_actions(name, observation)
        assert run(env_a, seed, actions) == run(env_b, seed, actions)
        # The same instance reset again replays identically too (no RNG state leaks across episodes).
        assert run(env_a, seed, actions) == run(env_b, seed, actions)


@pytest.mark.parametrize("name", ENV_FACTORIES)
def test_different_seeds_different_states(name):
    env = ENV_FACTORIES[name]()
    if name == "guess_number":  # the reset state is the full range by design; the targets differ
        targets = {binary_search(env, seed)[0] for seed in range(10)}
        assert len(targets) >= 4
        return
    observations = {env.reset(seed)[0] for seed in range(10)}
    assert len(observations) >= 8


@pytest.mark.parametrize("name", ENV_FACTORIES)
@pytest.mark.parametrize("action", ADVERSARIAL, ids=lambda a: repr(a)[:24])
def test_adversarial_action_is_invalid_and_changes_nothing(name, action):
    env, reference = ENV_FACTORIES[name](), ENV_FACTORIES[name]()
    observation, info = env.reset(3)
    reference.reset(3)
    start = time.perf_counter()
    result = check_step_result(name, env.step(action))
    assert time.perf_counter() - start < 0.5
    assert result.info["invalid_action"] is True
    assert result.reward == PENALTY
    assert not result.terminated and not result.truncated
    assert result.info["success"] is False
    assert result.info["state"] == info["state"]
    assert result.observation.endswith("\n") and len(result.observation) < 300
    # The env continues exactly as one that never saw the invalid action.
    follow_up = some_actions(name, observation)
    assert [env.step(a) for a in follow_up] == [reference.step(a) for a in follow_up]


@pytest.mark.parametrize("name", ENV_FACTORIES)
def test_step_before_reset_raises(name):
    with pytest.raises(RuntimeError, match="reset"):
        ENV_FACTORIES[name]().step("1")


@pytest.mark.parametrize(
    "factory, arg",
    [
        (lambda: GuessNumber(low=5, high=5), "high"),
        (lambda: GuessNumber(max_guesses=0), "max_guesses"),
        (lambda: GuessNumber(invalid_penalty=float("nan")), "invalid_penalty"),
        (lambda: GuessNumber(low=True), "low"),
        (lambda: FrozenLake(size=1), "size"),
        (lambda: FrozenLake(hole_fraction=0.9), "hole_fraction"),
        (lambda: FrozenLake(slippery="yes"), "slippery"),
        (lambda: FrozenLake(max_steps=0), "max_steps"),
        (lambda: Sokoban(dim=3), "dim"),
        (lambda: Sokoban(num_boxes=0), "num_boxes"),
        (lambda: Sokoban(num_boxes=9), "num_boxes"),
        (lambda: Sokoban(levels=["#P#"]), "levels"),
        (lambda: Sokoban(levels=["####\n#P*#\n####"]), "levels"),
        (lambda: Sokoban(step_penalty="0.1"), "step_penalty"),
        (lambda: Countdown(num_numbers=1), "num_numbers"),
        (lambda: Countdown(max_attempts=0), "max_attempts"),
        (lambda: MathEnv(problems=[{"question": "q"}]), "problems"),
        (lambda: MathEnv(problems=[{"question": "q", "answer": "many"}]), "problems"),
        (lambda: MathEnv(problems=[], path="x.jsonl"), "path"),
        (lambda: MathEnv(path="/nonexistent/file.jsonl"), "path"),
        (lambda: MathEnv(max_action_chars=0), "max_action_chars"),
    ],
)
def test_bad_constructor_args_name_the_arg(factory, arg):
    with pytest.raises(ValueError, match=arg):
        factory()


def test_registered_and_args_checked():
    assert ENVS.resolve("sokoban") is Sokoban and ENVS.resolve("math") is MathEnv
    assert ENVS.check_args("frozen_lake", {"size": 5, "slippery": True}) is FrozenLake
    with pytest.raises(ValueError, match="hole_fraction"):
        ENVS.check_args("frozen_lake", {"hole_fractoin": 0.1})


# ---------------------------------------------------------------------------------------- guess_number


def binary_search(env: GuessNumber, seed: int) -> tuple[int, list[StepResult]]:
    observation, _ = env.reset(seed)
    low, high = map(int, re.match(r"Guess a number from (-?\d+) to (-?\d+)\.\n$", observation).groups())
    results = []
    while True:
        guess = (low + high) // 2
        result = env.step(f"<answer>{guess}</answer>")
        results.append(result)
        if result.observation == f"{guess} is correct!\n":
            return guess, results
        assert result.observation in (f"{guess} is too low.\n", f"{guess} is too high.\n")
        low, high = (guess + 1, high) if "low" in result.observation else (low, guess - 1)
        assert result.info["state"] == f"{low}-{high}"


@pytest.mark.parametrize("low, high", [(1, 8), (-50, 50), (1, 1000)])
def test_guess_number_binary_search_solves(low, high):
    env = GuessNumber(low=low, high=high, max_guesses=20)
    assert env.reset(0)[0] == f"Guess a number from {low} to {high}.\n"
    for seed in range(10):
        target, results = binary_search(env, seed)
        assert low <= target <= high
        assert len(results) <= (high - low + 1).bit_length()
        assert [r.reward for r in results] == [0.0] * (len(results) - 1) + [1.0]
        assert results[-1].terminated and results[-1].info["success"] and not results[-1].truncated
        assert not any(r.info["success"] or r.terminated for r in results[:-1])
        after = env.step(str(target))
        assert after.observation == EPISODE_OVER and after.terminated and after.reward == 0.0


def test_guess_number_truncates_after_max_guesses_and_ignores_invalid():
    env = GuessNumber(low=1, high=8, max_guesses=3)
    target = binary_search(GuessNumber(), 5)[0]
    env.reset(5)
    wrong = [str(g) for g in range(1, 9) if g != target][:3]
    results = [env.step(wrong[0]), env.step("4.5"), env.step(wrong[1]), env.step(wrong[2])]
    assert [r.truncated for r in results] == [False, False, False, True]
    assert not any(r.terminated or r.info["success"] for r in results)
    assert env.step(str(target)).observation == EPISODE_OVER


@pytest.mark.parametrize("action", ["4 or 5", "four", "", "4.5", "9", "0", "<answer>4 5</answer>"])
def test_guess_number_invalid_formats(action):
    env = GuessNumber()
    env.reset(1)
    result = env.step(action)
    assert result.info["invalid_action"] and "1 to 8" in result.observation


# ----------------------------------------------------------------------------------------- frozen_lake


def bfs_path(grid: list[str], start: tuple[int, int], goal: tuple[int, int]) -> list[str] | None:
    """Shortest list of moves from start to goal over non-hole cells (the test's own BFS)."""
    size = len(grid)
    parents: dict[tuple[int, int], tuple[tuple[int, int], str] | None] = {start: None}
    queue = deque([start])
    while queue:
        pos = queue.popleft()
        if pos == goal:
            path = []
            while parents[pos] is not None:
                pos, move = parents[pos]
                path.append(move)
            return path[::-1]
        for move, (dr, dc) in GRID_MOVES.items():
            nxt = (pos[0] + dr, pos[1] + dc)
            if (
                0 <= nxt[0] < size
                and 0 <= nxt[1] < size
                and nxt not in parents
                and grid[nxt[0]][nxt[1]] != "H"
            ):
                parents[nxt] = (pos, move)
                queue.append(nxt)
    return None


@pytest.mark.parametrize("size, hole_fraction", [(4, 0.2), (6, 0.4), (8, 0.6)])
def test_frozen_lake_bfs_path_reaches_goal(size, hole_fraction):
    env = FrozenLake(size=size, hole_fraction=hole_fraction, max_steps=size * size)
    for seed in range(20):
        observation, _ = env.reset(seed)
        assert "left, down, right, up" in observation.splitlines()[0]
        grid = grid_of(observation)
        assert len(grid) == size and all(len(row) == size for row in grid)
        assert len(find(grid, "H")) == round(hole_fraction * (size * size - 2))
        (player,), (goal,) = find(grid, "P"), find(grid, "G")
        path = bfs_path(grid, player, goal)
        assert path, f"seed {seed}: no path in\n{observation}"
        for i, move in enumerate(path):
            result = env.step(move.upper() if i % 2 else f"<answer>{move}</answer>")
            dr, dc = GRID_MOVES[move]
            player = (player[0] + dr, player[1] + dc)
            assert find(grid_of(result.observation), "P") == [player]
        assert result.reward == 1.0 and result.terminated and result.info["success"]
        assert "goal" in result.observation


def test_frozen_lake_hole_terminates_and_edges_and_truncation():
    env = FrozenLake(size=4, hole_fraction=0.3, max_steps=50)
    fell = False
    for seed in range(30):
        grid = grid_of(env.reset(seed)[0])
        (start,) = find(grid, "P")
        for move, (dr, dc) in GRID_MOVES.items():
            if (start[0] + dr, start[1] + dc) in find(grid, "H"):
                result = env.step(move)
                assert result.terminated and result.reward == 0.0 and not result.info["success"]
                assert "hole" in result.observation
                fell = True
                break
        if fell:
            break
    assert fell
    env = FrozenLake(size=4, max_steps=3)
    for seed in range(30):
        grid = grid_of(env.reset(seed)[0])
        (start,) = find(grid, "P")
        edge_moves = [
            m
            for m, (dr, dc) in GRID_MOVES.items()
            if not 0 <= start[0] + dr < 4 or not 0 <= start[1] + dc < 4
        ]
        if edge_moves:  # bumping into the edge is a valid move that leaves the player in place
            results = [env.step(edge_moves[0]) for _ in range(3)]
            assert [r.truncated for r in results] == [False, False, True]
            assert not any(r.terminated or r.info["invalid_action"] for r in results)
            assert all(find(grid_of(r.observation), "P") == [start] for r in results)
            assert env.step("left").observation == EPISODE_OVER
            return
    raise AssertionError("no start on an edge in 30 seeds")


def test_frozen_lake_slippery_moves_as_intended_a_third_of_the_time():
    env = FrozenLake(size=6, hole_fraction=0.0, slippery=True, max_steps=1000)
    intended = total = 0
    for seed in range(40):
        grid = grid_of(env.reset(seed)[0])
        (goal,) = find(grid, "G")
        (player,) = find(grid, "P")
        for i in range(30):
            move = ("left", "down", "right", "up")[(seed + i) % 4]
            dr, dc = GRID_MOVES[move]
            target = (player[0] + dr, player[1] + dc)
            result = env.step(move)
            if result.terminated:
                break
            (player,) = find(grid_of(result.observation), "P")
            if 0 <= target[0] < 6 and 0 <= target[1] < 6 and target != goal:
                total += 1
                intended += player == target
    assert total > 500
    assert 0.26 < intended / total < 0.41


# --------------------------------------------------------------------------------------------- sokoban


def check_sokoban_grid(observation: str, dim: int, num_boxes: int) -> list[str]:
    grid = grid_of(observation)
    assert len(grid) == dim and all(len(row) == dim for row in grid)
    assert all(ch == "#" for ch in grid[0] + grid[-1] + "".join(row[0] + row[-1] for row in grid))
    assert len(find(grid, "X*")) == num_boxes == len(find(grid, "O*S"))
    assert len(find(grid, "PS")) == 1
    assert find(grid, "X"), "a generated level must not start solved"
    return grid


@pytest.mark.parametrize("dim, num_boxes, search_depth", [(6, 1, 30), (6, 2, 30), (7, 2, 40)])
def test_sokoban_levels_solvable_and_solution_replays(dim, num_boxes, search_depth):
    env = Sokoban(dim=dim, num_boxes=num_boxes, search_depth=search_depth)
    for seed in range(20):
        observation, _ = env.reset(seed)
        check_sokoban_grid(observation, dim, num_boxes)
        solution = solve(env.level, search_depth)
        assert solution is not None and 1 <= len(solution) <= search_depth
        results = [env.step(move) for move in solution]
        assert sum(r.reward for r in results) == 1.0
        assert results[-1].terminated and results[-1].info["success"]
        assert not any(r.terminated or r.truncated or r.info["invalid_action"] for r in results[:-1])
        final = grid_of(results[-1].observation)
        assert not find(final, "XO") and len(find(final, "*")) == num_boxes
        assert env.step("up").observation == EPISODE_OVER


def step_grid(env: Sokoban, action: str) -> tuple[StepResult, list[str]]:
    result = env.step(action)
    assert not result.info["invalid_action"]
    return result, grid_of(result.observation)


def test_sokoban_push_rules_on_fixed_levels():
    env = Sokoban(levels=["#######\n#PXXOO#\n#######"], step_penalty=-0.1)
    env.reset(0)
    result, grid = step_grid(env, "up")  # into a wall: a valid move that changes nothing
    assert grid[1] == "#PXXOO#" and result.reward == pytest.approx(-0.1)
    _, grid = step_grid(env, "right")  # a box behind a box: nothing moves
    assert grid[1] == "#PXXOO#"
    env = Sokoban(levels=["######\n#O_PX#\n######"])
    env.reset(0)
    _, grid = step_grid(env, "right")  # a box into a wall: nothing moves
    assert grid[1] == "#O_PX#"
    _, grid = step_grid(env, "left")
    assert grid[1] == "#OP_X#"
    _, grid = step_grid(env, "left")
    assert grid[1] == "#S__X#"  # the player on a target
    env = Sokoban(levels=["#####\n#___#\n#_X_#\n#_P_#\n#_O_#\n#####"])
    env.reset(0)
    _, grid = step_grid(env, "up")  # a push
    assert grid[1:4] == ["#_X_#", "#_P_#", "#___#"]


def test_sokoban_box_rewards_and_optimal_solution():
    env = Sokoban(levels=["######\n#P_XO#\n######"], box_reward=0.5, step_penalty=-0.1)
    env.reset(0)
    assert solve(env.level, 10) == ["right", "right"]
    assert solve(env.level, 1) is None
    first, second = env.step("right"), env.step("right")
    assert first.reward == pytest.approx(-0.1) and not first.terminated
    assert second.reward == pytest.approx(1.0 + 0.5 - 0.1) and second.terminated and second.info["success"]
    env = Sokoban(levels=["#######\n#P*_XO#\n#######"], box_reward=0.5)
    env.reset(0)
    off, grid = step_grid(env, "right")  # pushes a box off its target
    assert off.reward == pytest.approx(-0.5) and grid[1] == "#_SXXO#"


def test_sokoban_level_round_trip_and_truncation():
    env = Sokoban()
    observation, _ = env.reset(4)
    assert Level.from_text("\n".join(grid_of(observation))) == env.level
    env = Sokoban(levels=["######\n#O_PX#\n######"], max_steps=2)
    env.reset(0)
    results = [env.step("<answer>left</answer>"), env.step("right")]
    assert [r.truncated for r in results] == [False, True] and not results[1].terminated
    assert "Out of steps" in results[1].observation and env.step("left").observation == EPISODE_OVER


# ------------------------------------------------------------------------------------------- countdown


@pytest.mark.parametrize("num_numbers, max_number, max_target", [(3, 20, 100), (4, 50, 500), (2, 9, 30)])
def test_countdown_generating_expression_solves(num_numbers, max_number, max_target):
    env = Countdown(num_numbers=num_numbers, max_number=max_number, max_target=max_target)
    for seed in range(20):
        observation, _ = env.reset(seed)
        numbers, target = numbers_and_target(observation)
        assert len(numbers) == num_numbers and all(1 <= n <= max_number for n in numbers)
        assert 1 <= target <= max_target and "calculator" in observation
        # Independent check of the generating expression: its literals and its value (plain Python eval
        # of a digits-and-operators string the test has just vetted).
        assert re.fullmatch(r"[\d+\-*/() ]+", env.solution)
        assert sorted(int(n) for n in re.findall(r"\d+", env.solution)) == sorted(numbers)
        assert abs(eval(env.solution) - target) < 1e-9
        result = env.step(f"<answer>{env.solution}</answer>")
        assert result.reward == 1.0 and result.terminated and result.info["success"]
        assert env.step(env.solution).observation == EPISODE_OVER


def test_countdown_wrong_attempts_then_terminates():
    env = Countdown(max_attempts=2)
    observation, _ = env.reset(11)
    (a, b, c), target = numbers_and_target(observation)
    candidates = [
        f"{a} + {b} + {c}",
        f"{a} * {b} * {c}",
        f"{a} * {b} + {c}",
        f"({a} + {b}) * {c}",
        f"{a} - {b} - {c}",
    ]
    wrong = [e for e in candidates if eval(e) != target][:2]
    first = env.step(wrong[0])
    assert first.reward == 0.0 and not first.terminated and not first.info["invalid_action"]
    assert f"= {eval(wrong[0])}," in first.observation and f"not {target}" in first.observation
    second = env.step(f"<answer>{wrong[1]}</answer>")
    assert second.terminated and second.reward == 0.0 and not second.info["success"]
    assert "No attempts left" in second.observation


def test_countdown_rejects_misused_numbers_and_unsafe_expressions(monkeypatch):
    import os

    monkeypatch.setattr(os, "system", lambda *_: pytest.fail("os.system was called"))
    env = Countdown()
    observation, info = env.reset(2)
    (a, b, c), target = numbers_and_target(observation)
    bad = [
        f"{a} + {b}",  # a number left out
        f"{a} + {b} + {c} + {a}",  # a number used twice
        f"{a} + {b} + {c} + 1",  # a number not given
        f"{a} ** {b} + {c}",
        f"{a} + {b} + {c} = {target}",
        f"{a}.0 + {b} + {c}",
        f"abs({a}) + {b} + {c}",
        "(" * 300 + f"{a} + {b} + {c}" + ")" * 300,
        "__import__('os').system('ls')",
        f"{a} + {b} + {c}" + " + 0" * 60,
    ]
    for action in bad:
        result = env.step(action)
        assert result.info["invalid_action"], action
        assert result.info["state"] == info["state"] and not result.terminated


# ------------------------------------------------------------------------------------------------ math

# The bundled templates' questions, solved from their text alone.
TEMPLATE_SOLVERS: list[tuple[str, Callable[..., int]]] = [
    (r"A farmer has (\d+) \w+ and buys (\d+) more", lambda a, b: a + b),
    (r"A baker made (\d+) \w+ and sold (\d+) of them", lambda a, b: a - b),
    (r"There are (\d+) boxes with (\d+) \w+ in each box", lambda a, b: a * b),
    (r"(\d+) stickers are shared equally among (\d+) children", lambda a, b: a // b),
    (r"\w+ has (\d+) marbles, gives (\d+) to a friend and then finds (\d+) more", lambda a, b, c: a - b + c),
    (
        r"\w+ buys (\d+) pens at (\d+) dollars each and pays with (\d+) dollars",
        lambda n, p, paid: paid - n * p,
    ),
]


def solve_word_problem(question: str) -> int:
    for pattern, solver in TEMPLATE_SOLVERS:
        match = re.search(pattern, question)
        if match:
            return solver(*map(int, match.groups()))
    raise AssertionError(f"unknown template: {question}")


def test_math_generated_problems_accept_the_true_answer():
    env = MathEnv()
    questions = set()
    for seed in range(60):
        observation, _ = env.reset(seed)
        assert "<answer></answer>" in observation and "python" in observation
        question = observation.split("\n")[0]
        questions.add(question)
        answer = solve_word_problem(question)
        wrong = env.step(f"<answer>{answer + 1}</answer>")
        assert wrong.terminated and wrong.reward == 0.0 and "incorrect" in wrong.observation
        env.reset(seed)
        right = env.step(f"Let me think. <answer>{answer}</answer>")
        assert right.reward == 1.0 and right.terminated and right.info["success"], (question, answer)
    assert len(questions) >= 50


def test_math_rows_compare_numerically(tmp_path):
    rows = [
        {"question": "What is 3 divided by 4?", "answer": "3/4"},
        {"question": "Price of 1200 pens?", "answer": "$1,200"},
        {"question": "One tenth?", "answer": 0.1},
        {"question": "Minus seven?", "answer": -7},
    ]
    path = tmp_path / "problems.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    accepted = {
        0: ["0.75", "3/4", " 0.750 "],
        1: ["1200", "1,200", "$1200"],
        2: ["1/10", ".1"],
        3: ["-7", "-7.0"],
    }
    for env in (MathEnv(problems=rows, max_attempts=2), MathEnv(path=str(path), max_attempts=2)):
        for index, answers in accepted.items():
            for answer in answers:
                observation, _ = env.reset(index + 4 * 17)  # seed % len picks the row
                assert observation.startswith(rows[index]["question"])
                result = env.step(f"<answer>{answer}</answer>")
                assert result.reward == 1.0 and result.info["success"], (index, answer)
        _, info = env.reset(0)
        first = env.step("<answer>0.7</answer>")
        assert not first.terminated and first.observation == "0.7 is incorrect. 1 attempt left.\n"
        assert first.info["state"] != info["state"]
        last = env.step("<answer>0.7</answer>")
        assert last.terminated and last.reward == 0.0 and last.observation == "0.7 is incorrect.\n"
        assert env.step("<answer>3/4</answer>").observation == EPISODE_OVER


@pytest.mark.parametrize(
    "action", ["42", "<answer>forty two</answer>", "<answer>1/0</answer>", "<answer>3 apples</answer>"]
)
def test_math_invalid_answers_use_no_attempt(action):
    env = MathEnv(problems=[{"question": "6*7?", "answer": 42}])
    env.reset(0)
    result = env.step(action)
    assert result.info["invalid_action"] and not result.terminated
    assert env.step("<answer>42</answer>").reward == 1.0
