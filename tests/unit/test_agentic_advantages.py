"""GiGPO step-level advantages and trajectory-level StarPO (GRPO on multi-turn masks) vs plain-Python
loop references on random multi-turn layouts (turns of policy tokens separated by env tokens), plus
hand-computed cases and the input checks."""

import statistics
from collections import defaultdict
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from roll.algorithms.advantages import compute_grpo_outcome_advantage
from roll.algorithms.agentic_advantages import compute_gigpo_advantage

EPS = 1e-6


@dataclass
class Turn:
    state: int
    reward: float
    tokens: int
    """Policy tokens of the turn."""
    env_tokens: int
    """Env/tool tokens after the turn (mask 0)."""


@dataclass
class Trajectory:
    group: int
    score: float
    prompt: int
    turns: list[Turn]


@dataclass
class Batch:
    trajectories: list[Trajectory]
    width: int
    num_turns: int

    def tensors(self) -> dict[str, torch.Tensor]:
        """The GiGPO inputs; off-mask turn ids are -1, padded turns have state -1 and reward 0."""
        rows, width, k_max = len(self.trajectories), self.width, self.num_turns
        mask = torch.zeros(rows, width)
        turn_index = torch.full((rows, width), -1, dtype=torch.long)
        step_rewards = torch.zeros(rows, k_max)
        step_state_ids = torch.full((rows, k_max), -1, dtype=torch.long)
        for b, traj in enumerate(self.trajectories):
            t = traj.prompt
            for k, turn in enumerate(traj.turns):
                mask[b, t : t + turn.tokens] = 1
                turn_index[b, t : t + turn.tokens] = k
                t += turn.tokens + turn.env_tokens
                step_rewards[b, k] = turn.reward
                step_state_ids[b, k] = turn.state
        return {
            "scores": torch.tensor([traj.score for traj in self.trajectories]),
            "response_mask": mask,
            "group_index": torch.tensor([traj.group for traj in self.trajectories]),
            "turn_index": turn_index,
            "step_rewards": step_rewards,
            "step_state_ids": step_state_ids,
        }


def row_length(traj: Trajectory) -> int:
    return traj.prompt + sum(turn.tokens + turn.env_tokens for turn in traj.turns)


@st.composite
def batches(draw) -> Batch:
    # Small alphabets of groups, states and rewards so that anchor groups of several steps form.
    turn = st.builds(
        Turn,
        state=st.integers(0, 2),
        reward=st.sampled_from([-1.0, 0.0, 1.0]),
        tokens=st.integers(1, 3),
        env_tokens=st.integers(0, 2),
    )
    trajectory = st.builds(
        Trajectory,
        group=st.integers(0, 2),
        score=st.sampled_from([-2.0, -1.0, 0.0, 0.5, 1.0, 2.0]),
        prompt=st.integers(0, 2),
        turns=st.lists(turn, min_size=0, max_size=4),
    )
    trajectories = draw(st.lists(trajectory, min_size=1, max_size=8))
    width = max(row_length(traj) for traj in trajectories) + draw(st.integers(0, 2))
    num_turns = max(len(traj.turns) for traj in trajectories) + draw(st.integers(0, 1))
    return Batch(trajectories, max(width, 1), num_turns)


def loop_grpo(value: float, members: list[float], norm_by_std: bool) -> float:
    if len(members) == 1:
        return 0.0
    centered = value - statistics.fmean(members)
    return centered / (statistics.stdev(members) + EPS) if norm_by_std else centered


def loop_gigpo(batch: Batch, gamma: float, step_weight: float, norm_by_std: bool) -> torch.Tensor:
    """The definitions written out, one trajectory, turn and token at a time."""
    scores_by_group: dict[int, list[float]] = defaultdict(list)
    for traj in batch.trajectories:
        scores_by_group[traj.group].append(traj.score)
    returns: list[list[float]] = []
    for traj in batch.trajectories:
        rewards = [turn.reward for turn in traj.turns]
        returns.append(
            [sum(gamma ** (j - k) * rewards[j] for j in range(k, len(rewards))) for k in range(len(rewards))]
        )
    returns_by_anchor: dict[tuple[int, int], list[float]] = defaultdict(list)
    for traj, row_returns in zip(batch.trajectories, returns):
        for turn, value in zip(traj.turns, row_returns):
            returns_by_anchor[(traj.group, turn.state)].append(value)
    out = [[0.0] * batch.width for _ in batch.trajectories]
    for b, traj in enumerate(batch.trajectories):
        episode = loop_grpo(traj.score, scores_by_group[traj.group], norm_by_std)
        t = traj.prompt
        for turn, value in zip(traj.turns, returns[b]):
            step = loop_grpo(value, returns_by_anchor[(traj.group, turn.state)], norm_by_std)
            for pos in range(t, t + turn.tokens):
                out[b][pos] = episode + step_weight * step
            t += turn.tokens + turn.env_tokens
    return torch.tensor(out)


def loop_trajectory_grpo(batch: Batch, norm_by_std: bool) -> torch.Tensor:
    """StarPO's trajectory-level advantage: GRPO of the score on every policy token of the row."""
    scores_by_group: dict[int, list[float]] = defaultdict(list)
    for traj in batch.trajectories:
        scores_by_group[traj.group].append(traj.score)
    out = [[0.0] * batch.width for _ in batch.trajectories]
    for b, traj in enumerate(batch.trajectories):
        advantage = loop_grpo(traj.score, scores_by_group[traj.group], norm_by_std)
        t = traj.prompt
        for turn in traj.turns:
            for pos in range(t, t + turn.tokens):
                out[b][pos] = advantage
            t += turn.tokens + turn.env_tokens
    return torch.tensor(out)


@settings(max_examples=150, deadline=None)
@given(
    batch=batches(),
    gamma=st.sampled_from([1.0, 0.9]),
    step_weight=st.sampled_from([0.0, 0.5, 1.0, 1.7]),
    norm_by_std=st.booleans(),
)
def test_gigpo_matches_loop_reference(batch, gamma, step_weight, norm_by_std):
    inputs = batch.tensors()
    advantages, returns = compute_gigpo_advantage(
        **inputs, gamma=gamma, step_weight=step_weight, norm_by_std=norm_by_std, eps=EPS
    )
    expected = loop_gigpo(batch, gamma, step_weight, norm_by_std)
    assert advantages.dtype == torch.float32 and advantages.shape == inputs["response_mask"].shape
    torch.testing.assert_close(advantages, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(returns, advantages)
    assert bool((advantages[inputs["response_mask"] == 0] == 0).all())


@settings(max_examples=100, deadline=None)
@given(batch=batches(), norm_by_std=st.booleans())
def test_starpo_is_grpo_on_multi_turn_masks(batch, norm_by_std):
    inputs = batch.tensors()
    mask = inputs["response_mask"]
    advantages, returns = compute_grpo_outcome_advantage(
        inputs["scores"], mask, inputs["group_index"], norm_by_std=norm_by_std, eps=EPS
    )
    torch.testing.assert_close(advantages, loop_trajectory_grpo(batch, norm_by_std), rtol=1e-5, atol=1e-5)
    assert bool((advantages[mask == 0] == 0).all()), "env/prompt/padding tokens must get exactly 0"
    assert torch.equal(returns, advantages)


def three_trajectories(step_weight: float = 0.5) -> Batch:
    """One group: A and B pass through state 5 at turn 1 with future rewards 1 and 0; C goes to 7."""
    return Batch(
        [
            Trajectory(0, 1.0, 1, [Turn(0, 0.0, 2, 1), Turn(5, 1.0, 1, 0)]),
            Trajectory(0, 0.0, 1, [Turn(0, 0.0, 2, 1), Turn(5, 0.0, 1, 0)]),
            Trajectory(0, 0.0, 1, [Turn(0, 0.0, 2, 1), Turn(7, 0.0, 1, 0)]),
        ],
        width=5,
        num_turns=2,
    )


def test_shared_state_with_different_futures_by_hand():
    batch = three_trajectories()
    w, gamma = 0.5, 0.5
    advantages, _ = compute_gigpo_advantage(**batch.tensors(), gamma=gamma, step_weight=w, norm_by_std=False)
    # Episode: scores (1, 0, 0), mean 1/3. Turn 0 (state 0, all three): returns (0.5, 0, 0), mean 1/6.
    # Turn 1: state 5 holds A and B with returns (1, 0), mean 1/2; state 7 is C alone, so 0.
    episode = [2 / 3, -1 / 3, -1 / 3]
    turn0 = [1 / 3, -1 / 6, -1 / 6]
    turn1 = [0.5, -0.5, 0.0]
    expected = torch.tensor(
        [
            [0.0, episode[b] + w * turn0[b], episode[b] + w * turn0[b], 0.0, episode[b] + w * turn1[b]]
            for b in range(3)
        ]
    )
    torch.testing.assert_close(advantages, expected)


def test_shared_state_normalised_by_std_by_hand():
    batch = three_trajectories()
    advantages, _ = compute_gigpo_advantage(**batch.tensors(), gamma=1.0, step_weight=1.0)
    # Scores (1, 0, 0): mean 1/3, unbiased std sqrt(1/3), so (2/sqrt(3), -1/sqrt(3), -1/sqrt(3)).
    # Turn 0 returns (1, 0, 0) give the same; turn 1 at state 5: (1, 0) / std sqrt(1/2) = (+-1/sqrt(2)).
    r3, r2 = 3**0.5, 2**0.5
    a_e = [2 / r3, -1 / r3, -1 / r3]
    expected_turn1 = [a_e[0] + 1 / r2, a_e[1] - 1 / r2, a_e[2]]
    torch.testing.assert_close(advantages[:, 1], torch.tensor([2 * a for a in a_e]))
    torch.testing.assert_close(advantages[:, 4], torch.tensor(expected_turn1))


def test_same_state_in_another_group_is_not_an_anchor():
    # Rows 0 and 1 share group 0 and state 3; row 2 is in group 1 with the same state id 3.
    batch = Batch(
        [
            Trajectory(0, 1.0, 0, [Turn(3, 1.0, 1, 0)]),
            Trajectory(0, 0.0, 0, [Turn(3, 0.0, 1, 0)]),
            Trajectory(1, 5.0, 0, [Turn(3, 5.0, 1, 0)]),
        ],
        width=1,
        num_turns=1,
    )
    advantages, _ = compute_gigpo_advantage(**batch.tensors(), norm_by_std=False)
    torch.testing.assert_close(advantages[:, 0], torch.tensor([0.5 + 0.5, -0.5 - 0.5, 0.0]))


def test_state_revisited_in_one_trajectory_joins_its_anchor_group():
    # Row 0 bumps into a wall: state 0 twice (returns 1 and 1); row 1 leaves state 0 with return 0.
    batch = Batch(
        [
            Trajectory(0, 1.0, 0, [Turn(0, 0.0, 1, 0), Turn(0, 1.0, 1, 0)]),
            Trajectory(0, 0.0, 0, [Turn(0, 0.0, 1, 0), Turn(4, 0.0, 1, 0)]),
        ],
        width=2,
        num_turns=2,
    )
    advantages, _ = compute_gigpo_advantage(**batch.tensors(), norm_by_std=False, step_weight=1.0)
    # Anchor (0, state 0) holds returns (1, 1, 0): mean 2/3. Episode: (0.5, -0.5). State 4 is alone.
    expected = torch.tensor([[0.5 + 1 / 3, 0.5 + 1 / 3], [-0.5 - 2 / 3, -0.5]])
    torch.testing.assert_close(advantages, expected)


@pytest.mark.parametrize("norm_by_std", [True, False])
def test_singleton_groups_give_zero(norm_by_std):
    batch = Batch(
        [Trajectory(g, float(g), 1, [Turn(g, 1.0, 2, 1), Turn(10 + g, 2.0, 1, 0)]) for g in range(4)],
        width=6,
        num_turns=2,
    )
    advantages, returns = compute_gigpo_advantage(**batch.tensors(), norm_by_std=norm_by_std)
    assert torch.equal(advantages, torch.zeros(4, 6)) and torch.equal(returns, advantages)


def test_singleton_anchor_states_leave_the_episode_advantage():
    # Every step's state is unique, so GiGPO reduces to trajectory-level GRPO.
    batch = Batch(
        [
            Trajectory(0, s, 0, [Turn(10 * b + k, 1.0, 1, 1) for k in range(3)])
            for b, s in enumerate([1.0, 3.0, 2.0])
        ],
        width=6,
        num_turns=3,
    )
    inputs = batch.tensors()
    advantages, _ = compute_gigpo_advantage(**inputs, gamma=0.9, step_weight=2.0)
    grpo, _ = compute_grpo_outcome_advantage(inputs["scores"], inputs["response_mask"], inputs["group_index"])
    torch.testing.assert_close(advantages, grpo)


def test_off_mask_turn_ids_are_ignored_and_int32_ids_accepted():
    inputs = three_trajectories().tensors()
    expected, _ = compute_gigpo_advantage(**inputs, gamma=0.9)
    inputs["turn_index"] = torch.where(inputs["response_mask"] > 0, inputs["turn_index"], 99).int()
    inputs["group_index"] = inputs["group_index"].int()
    inputs["step_state_ids"] = inputs["step_state_ids"].int()
    got, _ = compute_gigpo_advantage(**inputs, gamma=0.9)
    torch.testing.assert_close(got, expected)


def test_no_turns_gives_zeros():
    inputs = Batch([Trajectory(0, 1.0, 2, []), Trajectory(0, 0.0, 1, [])], width=3, num_turns=0).tensors()
    advantages, _ = compute_gigpo_advantage(**inputs)
    assert torch.equal(advantages, torch.zeros(2, 3))


def _bad(**changes):
    inputs = three_trajectories().tensors()
    inputs.update(changes)
    return inputs


@pytest.mark.parametrize(
    "inputs, message",
    [
        (_bad(scores=torch.zeros(4)), r"scores \(4,\)"),
        (_bad(turn_index=torch.zeros(3, 4, dtype=torch.long)), r"turn_index \(3, 4\)"),
        (_bad(step_state_ids=torch.zeros(3, 3, dtype=torch.long)), r"step_state_ids \(3, 3\)"),
        (_bad(step_rewards=torch.zeros(3)), r"step_rewards \(3,\)"),
        (_bad(group_index=torch.zeros(3)), "group_index must hold integer ids"),
        (_bad(turn_index=torch.full((3, 5), 2, dtype=torch.long)), r"turn_index\[0, 1\] = 2 .* K=2"),
        (_bad(turn_index=torch.full((3, 5), -1, dtype=torch.long)), r"turn_index\[0, 1\] = -1"),
        (_bad(step_state_ids=torch.tensor([[0, 5], [0, -1], [0, 7]])), "policy token .* turn 1, whose"),
        (_bad(step_state_ids=torch.tensor([[-1, 5], [0, 5], [0, 7]])), "row 0 has -1 .* at turn 0"),
    ],
)
def test_bad_inputs_name_the_tensors(inputs, message):
    with pytest.raises(ValueError, match=message):
        compute_gigpo_advantage(**inputs)


def test_gamma_out_of_range():
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\], got 1.5"):
        compute_gigpo_advantage(**three_trajectories().tensors(), gamma=1.5)


def test_zero_eps_with_std_norm_is_refused():
    with pytest.raises(ValueError, match="eps must be > 0 with norm_by_std=True, got 0.0"):
        compute_gigpo_advantage(**three_trajectories().tensors(), eps=0.0)
    advantages, _ = compute_gigpo_advantage(**three_trajectories().tensors(), eps=0.0, norm_by_std=False)
    assert bool(advantages.isfinite().all())
