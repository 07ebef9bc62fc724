"""Trajectories -> Batch rows (layout, per-turn tensors), GiGPO through compute_advantages on such a
batch (hand-computed values), episode metrics, and the train/held-out seed split."""

import math

import pytest
import torch

from roll.algorithms.advantages import compute_advantages
from roll.config.algorithm import AlgorithmConfig
from roll.pipelines.agentic import VAL_SEED_BASE, episode_metrics, training_seed, trajectories_to_batch
from roll.strategies.env_rollout import EpisodeSpec, Trajectory

PAD = 0


def make_traj(
    env, group, sample, turns, *, prompt=(5, 6), success=False, termination="terminated", invalid=0
):
    """turns: list of (response ids, observation ids after it or None, reward, state)."""
    traj = Trajectory(spec=EpisodeSpec(env=env, seed=group, group=group, sample=sample))
    traj.ids, traj.response_mask, traj.logprobs, traj.turn_index = (
        list(prompt),
        [0] * len(prompt),
        [0.0] * len(prompt),
        [-1] * len(prompt),
    )
    traj.prompt_length = len(prompt)
    for k, (response, observation, reward, state) in enumerate(turns):
        traj.ids += response
        traj.response_mask += [1] * len(response)
        traj.logprobs += [-0.1 * (k + 1)] * len(response)
        traj.turn_index += [k] * len(response)
        traj.step_rewards.append(reward)
        traj.step_states.append(state)
        if observation:
            traj.ids += observation
            traj.response_mask += [0] * len(observation)
            traj.logprobs += [0.0] * len(observation)
            traj.turn_index += [-1] * len(observation)
    traj.success, traj.termination, traj.invalid_actions = success, termination, invalid
    return traj


@pytest.fixture
def pair():
    # One group: A reaches the goal from s1 after s0, B goes s0 -> s2 and fails.
    a = make_traj("lake", 0, 0, [([10, 11], [20], 0.0, "s0"), ([12], None, 1.0, "s1")], success=True)
    b = make_traj(
        "lake", 0, 1, [([13], [21, 22], 0.0, "s0"), ([14, 15, 16], None, 0.0, "s2")], termination="max_turns"
    )
    return a, b


def test_rows_hold_the_trajectory_ids_masks_and_turns(pair):
    a, b = pair
    batch = trajectories_to_batch([a, b], PAD)
    width = max(len(a.ids), len(b.ids))
    for row, traj in enumerate(pair):
        n = len(traj.ids)
        assert batch.input_ids[row].tolist() == traj.ids + [PAD] * (width - n)
        assert batch.attention_mask[row].tolist() == [1] * n + [0] * (width - n)
        assert batch.response_mask[row].tolist() == [float(m) for m in traj.response_mask] + [0.0] * (
            width - n
        )
        assert batch.tensors["turn_index"][row].tolist() == traj.turn_index + [-1] * (width - n)
        assert batch.tensors["rollout_log_probs"][row, :n].tolist() == pytest.approx(traj.logprobs)
    assert batch.scores.tolist() == [1.0, 0.0]
    assert batch.tensors["group_index"].tolist() == [0, 0]
    assert batch.tensors["step_rewards"].tolist() == [[0.0, 1.0], [0.0, 0.0]]
    states = batch.tensors["step_state_ids"]
    assert (
        states[0, 0] == states[1, 0] and len({int(states[0, 1]), int(states[1, 1]), int(states[0, 0])}) == 3
    )
    assert batch.tensors["response_lengths"].tolist() == [3, 4]


def test_gigpo_on_an_episode_batch_matches_hand_values(pair):
    batch = trajectories_to_batch(list(pair), PAD)
    cfg = AlgorithmConfig(advantage_estimator="gigpo", gigpo_step_weight=1.0, gamma=1.0)
    result = compute_advantages(
        cfg,
        scores=batch.scores,
        response_mask=batch.response_mask,
        group_index=batch.tensors["group_index"],
        **{k: batch.tensors[k] for k in ("turn_index", "step_rewards", "step_state_ids")},
    )
    # Episode level: scores 1 and 0, unbiased std sqrt(0.5) -> +-1/sqrt(2). Step level: the two turns
    # from s0 have returns 1 and 0 -> +-1/sqrt(2); the turns from s1 and s2 are singletons -> 0.
    h = 1 / math.sqrt(2)
    expected = {0: {0: 2 * h, 1: h}, 1: {0: -2 * h, 1: -h}}
    adv = result.advantages
    for row in (0, 1):
        for t, turn in enumerate(batch.tensors["turn_index"][row].tolist()):
            want = expected[row][turn] if turn >= 0 else 0.0
            assert float(adv[row, t]) == pytest.approx(want, abs=1e-4)
    # StarPO (grpo on trajectory scores): every policy token of a trajectory gets its episode advantage.
    starpo = compute_advantages(
        AlgorithmConfig(advantage_estimator="grpo"),
        scores=batch.scores,
        response_mask=batch.response_mask,
        group_index=batch.tensors["group_index"],
    ).advantages
    assert torch.allclose(starpo, batch.response_mask * torch.tensor([[h], [-h]]), atol=1e-4)


def test_episode_metrics_overall_and_per_env(pair):
    a, b = pair
    c = make_traj(
        "maze",
        1,
        0,
        [([1], [2], 0.0, "x"), ([3], [4], 0.0, "y"), ([5], None, 0.0, "z")],
        invalid=2,
        termination="invalid_action",
    )
    metrics = episode_metrics([a, b, c], "episode/")
    assert metrics["episode/success_rate"] == pytest.approx(1 / 3)
    assert metrics["episode/turns_mean"] == pytest.approx(7 / 3)
    assert metrics["episode/invalid_action_rate"] == pytest.approx(2 / 7)
    assert metrics["episode/termination/max_turns"] == pytest.approx(1 / 3)
    assert metrics["episode/env/lake/success_rate"] == pytest.approx(0.5)
    assert metrics["episode/env/maze/termination/invalid_action"] == 1.0


def test_training_seeds_are_deterministic_and_below_the_held_out_range():
    seeds = {training_seed(42, step, group) for step in range(1, 50) for group in range(16)}
    assert len(seeds) == 49 * 16 and max(seeds) < VAL_SEED_BASE
    assert training_seed(42, 3, 1) == training_seed(42, 3, 1) != training_seed(43, 3, 1)
