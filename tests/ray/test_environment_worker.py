"""The environment role on a real local Ray cluster (127.0.0.1): environment workers play episodes
against an actor_infer replica (batched turns), split by groups; an env worker process that dies
fails the call naming the role and rank."""

import os

import pytest

from roll.config.environment import EnvironmentConfig
from roll.config.worker import WorkerConfig
from roll.data.synthetic import build_char_tokenizer
from roll.data.tokenizer import load_tokenizer
from roll.distributed.worker_group import WorkerFailedError, WorkerGroup
from roll.envs import StepResult
from roll.models.tiny import save_tiny_hf_model
from roll.strategies.engine import SamplingParams
from roll.strategies.env_rollout import EpisodeSpec
from workers.environment import EnvironmentWorker
from workers.infer import InferWorker

ray = pytest.importorskip("ray")


class ExitingEnv:
    """Kills its worker process on the first step (a crash that no try/except can catch)."""

    def reset(self, seed):
        return "go\n", {}

    def step(self, action):
        os._exit(3)
        return StepResult(observation="", reward=0.0, terminated=True, truncated=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, ray_cluster):
    root = tmp_path_factory.mktemp("envworker")
    tokenizer_dir = build_char_tokenizer(root / "tok")
    model_dir = save_tiny_hf_model("qwen2", root / "model", vocab_size=128)
    infer = WorkerGroup(
        "actor_infer",
        InferWorker,
        WorkerConfig(model_path=str(model_dir), strategy={"name": "native"}),
        None,
        [0],
        seed=0,
    )
    infer.wait_ready()
    yield infer, str(tokenizer_dir)


EVERY_TOKEN = SamplingParams(temperature=1.0, max_new_tokens=4, stop_token_ids=tuple(range(128)))


def test_workers_play_groups_against_the_engine(setup):
    infer, tokenizer_dir = setup
    tokenizer = load_tokenizer(tokenizer_dir)
    cfg = EnvironmentConfig(
        envs=[{"type": "guess_number", "args": {"low": 1, "high": 8}}], max_turns=3, num_workers=2
    )
    group = WorkerGroup(
        "environment", EnvironmentWorker, cfg, None, [0, 1], tokenizer_path=tokenizer_dir, infer=infer
    )
    try:
        episodes = [
            EpisodeSpec(env="guess_number", seed=g, group=g, sample=s) for g in range(4) for s in range(2)
        ]
        parts = group.wait(
            [
                group.workers[0].run_episodes.remote(episodes[:4], EVERY_TOKEN, "a"),
                group.workers[1].run_episodes.remote(episodes[4:], EVERY_TOKEN, "a"),
            ]
        )
        trajectories = parts[0] + parts[1]
        assert [t.spec for t in trajectories] == episodes
        for traj in trajectories:
            prompt = tokenizer.decode(traj.ids[: traj.prompt_length], skip_special_tokens=True)
            assert prompt == "Guess a number from 1 to 8.\n"
            assert 1 <= traj.num_turns <= 3 and traj.generated_tokens == traj.num_turns
            assert traj.termination in ("terminated", "truncated", "max_turns")
        stats = group.call("stats")
        assert all(s["generate_calls"] <= 3 for s in stats)  # one batched call per turn round
    finally:
        group.kill()


def test_a_dead_environment_worker_names_role_and_rank(setup):
    infer, tokenizer_dir = setup
    cfg = EnvironmentConfig(envs=[{"type": "test_environment_worker:ExitingEnv"}], max_turns=2)
    group = WorkerGroup(
        "environment", EnvironmentWorker, cfg, None, [0], tokenizer_path=tokenizer_dir, infer=infer
    )
    try:
        episodes = [EpisodeSpec(env="ExitingEnv", seed=0, group=0, sample=0)]
        with pytest.raises(WorkerFailedError, match="environment rank 0 failed"):
            group.wait([group.workers[0].run_episodes.remote(episodes, EVERY_TOKEN, "b")])
    finally:
        group.kill()
