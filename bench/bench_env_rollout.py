"""Benchmark of multi-turn rollouts (not a test): episodes played by `EpisodeRunner` against the native
engine with every waiting turn batched into one generate call, side by side with the same episodes
played one trajectory at a time (envs_per_worker=1: one request per call, the naive env loop).

A random tiny Qwen2 plays guess_number (invalid guesses keep the episode going) for `--turns` turns;
a response stops on any of 1/8 of the vocabulary, so turns average ~8 tokens. Both runs play the same
seeds with the same sampling streams; the figures are generated tokens per second and engine calls.

Run from the repository root:  python bench/bench_env_rollout.py [--episodes 64] [--turns 4] [--repeats 3]
"""

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import torch

from roll.config.environment import EnvironmentConfig
from roll.data.synthetic import build_char_tokenizer
from roll.data.tokenizer import load_tokenizer
from roll.models.tiny import save_tiny_hf_model
from roll.strategies.engine import SamplingParams
from roll.strategies.env_rollout import EpisodeRunner, EpisodeSpec
from roll.strategies.native_engine import NativeEngine


class CountingEngine:
    """The native engine, counting generate calls."""

    def __init__(self, model_dir: str) -> None:
        self.engine = NativeEngine(model_dir, seed=0, max_batch_size=256)
        self.calls = 0

    async def generate(self, requests):
        self.calls += 1
        return await self.engine.generate(requests)


def play(model_dir: str, tokenizer, episodes: list[EpisodeSpec], turns: int, concurrent: int, tag: str):
    cfg = EnvironmentConfig(
        envs=[{"type": "guess_number"}], max_turns=turns, max_context_tokens=1024, envs_per_worker=concurrent
    )
    engine = CountingEngine(model_dir)
    runner = EpisodeRunner(cfg, tokenizer, engine.generate)
    sampling = SamplingParams(temperature=1.0, max_new_tokens=32, stop_token_ids=tuple(range(0, 128, 8)))
    started = time.perf_counter()
    trajectories = asyncio.run(runner.run(episodes, sampling, tag))
    seconds = time.perf_counter() - started
    runner.close()
    return sum(t.generated_tokens for t in trajectories), seconds, engine.calls


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = load_tokenizer(build_char_tokenizer(Path(tmp) / "tok"))
        model_dir = str(save_tiny_hf_model("qwen2", Path(tmp) / "model", vocab_size=128))
        episodes = [EpisodeSpec(env="guess_number", seed=i, group=i, sample=0) for i in range(args.episodes)]
        rows = {}
        for name, concurrent in (("batched turns", args.episodes), ("one at a time", 1)):
            best = None
            for repeat in range(args.repeats):
                tokens, seconds, calls = play(
                    model_dir, tokenizer, episodes, args.turns, concurrent, f"r{repeat}"
                )
                if best is None or seconds < best[1]:
                    best = (tokens, seconds, calls)
            rows[name] = best
        print(
            f"{args.episodes} episodes x up to {args.turns} turns, native engine, random tiny Qwen2 (1 thread)"
        )
        print(f"{'':16}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}{'engine calls':>14}")
        for name, (tokens, seconds, calls) in rows.items():
            print(f"{name:16}{tokens:>8}{seconds:>10.3f}{tokens / seconds:>10.0f}{calls:>14}")
        batched, serial = rows["batched turns"], rows["one at a time"]
        speedup = (batched[0] / batched[1]) / (serial[0] / serial[1])
        print(f"batched / one-at-a-time tokens/s: {speedup:.1f}x")


if __name__ == "__main__":
    main()
