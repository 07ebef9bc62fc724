"""`type: gymnasium` adapter: gymnasium's FrozenLake-v1 and CartPole-v1 through roll's text Env protocol,
compared with the same gymnasium env driven directly."""

import sys

import pytest

gym = pytest.importorskip("gymnasium")

from roll.envs.base import Env, check_reset_result, check_step_result  # noqa: E402
from roll.envs.gym_adapter import GymnasiumEnv  # noqa: E402
from roll.envs.parsing import EPISODE_OVER  # noqa: E402
from roll.envs.registry import ENVS  # noqa: E402

ACTIONS = {"left": 0, "down": 1, "right": 2, "up": 3}
# The default 4x4 map is SFFF / FHFH / FFFH / HFFG.
PATH_TO_GOAL = ["down", "down", "right", "right", "down", "right"]


def frozen_lake(**overrides) -> GymnasiumEnv:
    args = {"env_id": "FrozenLake-v1", "make_kwargs": {"is_slippery": False}, "action_map": ACTIONS}
    return GymnasiumEnv(**{**args, **overrides})


def reference_lake(**make_kwargs):
    return gym.make("FrozenLake-v1", render_mode="ansi", **{"is_slippery": False, **make_kwargs})


def test_reset_text_is_gymnasiums_own_render():
    env, ref = frozen_lake(), reference_lake()
    observation, info = check_reset_result("gymnasium", env.reset(seed=0))
    ref.reset(seed=0)
    assert observation == ref.render() and info["state"] == observation
    assert isinstance(env, Env)


def test_known_path_reaches_the_goal_in_lockstep_with_gymnasium():
    env, ref = frozen_lake(), reference_lake()
    env.reset(seed=0)
    ref.reset(seed=0)
    for k, action in enumerate(PATH_TO_GOAL):
        result = check_step_result("gymnasium", env.step(action))
        _, reward, terminated, truncated, _ = ref.step(ACTIONS[action])
        assert result.observation == ref.render() == result.info["state"]
        assert (result.reward, result.terminated, result.truncated) == (reward, terminated, truncated)
        last = k == len(PATH_TO_GOAL) - 1
        assert result.terminated is last and result.info["success"] is last
        assert result.info["invalid_action"] is False
    assert result.reward == 1.0
    after = env.step("up")
    assert after.observation == EPISODE_OVER and after.terminated and after.info["invalid_action"]
    env.close()


def test_falling_into_a_hole_terminates_without_success():
    env = frozen_lake()
    env.reset(seed=0)
    env.step("down")
    result = env.step("right")  # (1, 1) is a hole
    assert result.terminated and result.reward == 0.0 and result.info["success"] is False


@pytest.mark.parametrize(
    "action", ["DOWN", "  down\n", "<answer>Down</answer>", "I go <answer> down </answer>", "1", "+1", "01"]
)
def test_action_spellings(action):
    env, ref = frozen_lake(), reference_lake()
    env.reset(seed=0)
    ref.reset(seed=0)
    ref.step(1)
    result = env.step(action)
    assert result.info["invalid_action"] is False and result.observation == ref.render()


@pytest.mark.parametrize(
    "action, clause",
    [
        ("jump", "'jump' is not one of left, down, right, up nor an action number"),
        ("4", "'4' is not one of"),
        ("-1", "'-1' is not one of"),
        ("", "the answer is empty"),
        ("<answer>down", "not closed"),
        ("down" * 600, "the limit is 2000"),
        ("١", "not one of"),  # an Arabic-Indic one: int() would accept it, the parser must not
    ],
)
def test_invalid_actions_do_not_step_the_env(action, clause):
    env = frozen_lake(invalid_penalty=-0.5)
    start, _ = env.reset(seed=0)
    result = env.step(action)
    assert result.info["invalid_action"] is True and result.info["success"] is False
    assert result.reward == -0.5 and not result.terminated and not result.truncated
    assert clause in result.observation
    assert "Answer with one of: left, down, right, up (or an integer from 0 to 3)." in result.observation
    assert result.info["state"] == start
    # The env did not move: the path to the goal still works from the start.
    for move in PATH_TO_GOAL:
        result = env.step(move)
    assert result.info["success"]


def test_non_string_action_is_invalid():
    env = frozen_lake()
    env.reset(seed=0)
    assert env.step(None).info["invalid_action"] is True  # type: ignore[arg-type]


def test_integer_actions_without_action_map():
    env = frozen_lake(action_map=None)
    env.reset(seed=0)
    assert env.step("down").observation.startswith("Invalid action: 'down' is not an integer")
    assert "Answer with an integer from 0 to 3." in env.step("9").observation
    assert env.step("1").info["invalid_action"] is False


def test_seeds_are_deterministic_on_the_slippery_lake():
    def play(seed: int) -> list[tuple]:
        env = frozen_lake(make_kwargs={"is_slippery": True})
        trace: list[tuple] = [env.reset(seed=seed)[0]]
        for action in ["right", "down", "right", "down", "down", "right"] * 3:
            result = env.step(action)
            trace.append((result.observation, result.reward, result.terminated, result.truncated))
            if result.terminated or result.truncated:
                break
        return trace

    assert play(7) == play(7)
    traces = {tuple(play(seed)) for seed in range(8)}
    assert len(traces) > 1, "slipping must depend on the seed"


def test_state_key_observation_is_the_raw_position():
    env = frozen_lake(state_key="observation")
    _, info = env.reset(seed=0)
    assert info["state"] == 0
    assert env.step("down").info["state"] == 4
    assert env.step("right").info["state"] == 5


def test_success_reward_override():
    env = frozen_lake(success_reward=2.0)
    env.reset(seed=0)
    for move in PATH_TO_GOAL:
        result = env.step(move)
    assert result.terminated and result.reward == 1.0 and result.info["success"] is False


def test_without_ansi_the_text_is_str_of_the_observation():
    env = GymnasiumEnv("CartPole-v1", action_map={"left": 0, "right": 1})
    ref = gym.make("CartPole-v1")
    observation, _ = env.reset(seed=3)
    ref_obs, _ = ref.reset(seed=3)
    assert observation == str(ref_obs)
    result = env.step("right")
    assert result.observation == str(ref.step(1)[0]) and result.reward == 1.0
    plain = frozen_lake(render_text=False)
    assert plain.reset(seed=0)[0] == "0"


def test_array_observation_state_key_is_stable():
    first = GymnasiumEnv("CartPole-v1", state_key="observation")
    second = GymnasiumEnv("CartPole-v1", state_key="observation")
    key = first.reset(seed=1)[1]["state"]
    assert key == second.reset(seed=1)[1]["state"] and key.startswith("float32(4,):")
    assert first.step("0").info["state"] != key


@pytest.mark.parametrize(
    "args, message",
    [
        ({"action_map": {"left": 7}}, r"action_map\['left'\] = 7 is not an action .* 0..3"),
        ({"action_map": {"Left": 0, " left": 1}}, "repeats another name"),
        ({"max_action_chars": 0}, "max_action_chars=0 is invalid"),
        ({"state_key": "grid"}, "state_key='grid' is invalid"),
    ],
)
def test_bad_args(args, message):
    with pytest.raises(ValueError, match=message):
        frozen_lake(**args)


def test_continuous_action_space_is_refused():
    with pytest.raises(ValueError, match="only Discrete action spaces"):
        GymnasiumEnv("Pendulum-v1")


def test_step_before_reset():
    with pytest.raises(RuntimeError, match="before reset"):
        frozen_lake().step("down")


def test_registered_and_args_checked():
    assert ENVS.resolve("gymnasium") is GymnasiumEnv
    with pytest.raises(ValueError, match="unknown arg 'env'"):
        ENVS.check_args("gymnasium", {"env": "FrozenLake-v1"})


def test_missing_gymnasium_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # what an uninstalled package looks like to import
    with pytest.raises(ImportError, match="pip install gymnasium"):
        frozen_lake()
