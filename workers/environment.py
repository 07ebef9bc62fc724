"""Environment worker: a CPU Ray actor hosting many env instances and playing multi-turn episodes.

An async Ray actor (its episodes are asyncio tasks). An async Ray actor (its episodes are asyncio tasks). A thin shell around `roll.strategies.env_rollout.EpisodeRunner`: it owns the tokenizer and the
env pool, and reaches the rollout engines through the actor_infer WorkerGroup's handles (turns of
all its running trajectories are batched into one `generate` call per round).
"""

import asyncio
from collections.abc import Sequence
from typing import Any

from roll.config.environment import EnvironmentConfig
from roll.data.tokenizer import load_tokenizer
from roll.strategies.engine import GenerationOutput, GenerationRequest, SamplingParams, generate_on_replicas
from roll.strategies.env_rollout import EpisodeRunner, EpisodeSpec, Trajectory
from workers.base import Worker


class EnvironmentWorker(Worker):
    """One environment worker (rank r of `environment.num_workers`)."""

    def __init__(
        self, config: EnvironmentConfig, *, tokenizer_path: str, infer: Any, **rank_info: Any
    ) -> None:
        super().__init__(config, **rank_info)
        self.infer = infer
        self.runner = EpisodeRunner(config, load_tokenizer(tokenizer_path), self._generate)

    async def _generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        return await asyncio.to_thread(generate_on_replicas, self.infer, requests)

    async def run_episodes(
        self, episodes: Sequence[EpisodeSpec], sampling: SamplingParams, tag: str
    ) -> list[Trajectory]:
        """Play `episodes` concurrently (up to environment.envs_per_worker at once); trajectories in order."""
        return await self.runner.run(list(episodes), sampling, f"{tag}-w{self.rank}")

    def stats(self) -> dict[str, int]:
        """Counters since start: env instances built / discarded, generate calls, tool calls and errors."""
        counters = dict(self.runner.stats)
        for name, tools in self.runner.tools.items():
            if tools is not None:
                counters.update({f"{name}/tool_{key}": value for key, value in tools.stats.items()})
        return counters

    def close(self) -> None:
        """Close the idle env instances."""
        self.runner.close()
