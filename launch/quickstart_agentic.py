"""The agentic quickstart: SFT on a sloppy teacher's guess-the-number turns, then multi-turn GRPO.

    bash launch/quickstart_agentic.sh     # sets up .venv, then runs this script
    python launch/quickstart_agentic.py --out ./outputs/agentic_quickstart

1. A char tokenizer and a random tiny Qwen2 (no downloads), and SFT rows from a teacher who
   binary-searches only 35% of the time and otherwise guesses the lowest number still possible
   (roll/envs/demonstrations.py): imitating it, the greedy policy mostly scans linearly.
2. SFT (configs/agentic/guess_number_sft.yaml) on those turns.
3. Agentic GRPO (configs/agentic/guess_number.yaml): episodes of up to 4 guesses on 1..8 in the
   guess_number env, reward 1 for finding the number; the policy learns to halve the interval.
The last line printed is `held-out success rate: <before> -> <after>` (greedy, held-out seeds).
"""

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "launch"))

from quickstart import prepare_base_model  # noqa: E402

from roll.config.loader import load_config  # noqa: E402
from roll.envs.bundled.guess_number import GuessNumber  # noqa: E402
from roll.envs.demonstrations import sloppy_guesser, teacher_sft_rows  # noqa: E402
from roll.utils.logging import get_logger  # noqa: E402

logger = get_logger("roll.quickstart_agentic")

LOW, HIGH, MAX_TURNS = 1, 8, 4
TEACHER_NOISE = 0.65
TEACHER_EPISODES = 6000


def write_teacher_rows(path: Path, seed: int, episodes: int) -> None:
    """SFT rows of the sloppy teacher on training seeds (below the held-out seed range)."""
    if path.is_file():
        return
    env = GuessNumber(low=LOW, high=HIGH, max_guesses=MAX_TURNS)
    seeds = list(range(seed * episodes, (seed + 1) * episodes))
    rows, success = teacher_sft_rows(
        env, sloppy_guesser(LOW, HIGH, TEACHER_NOISE), seeds, max_turns=MAX_TURNS, rng=random.Random(seed)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    logger.info("teacher: %d turns from %d episodes, success rate %.3f", len(rows), episodes, success)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="./outputs/agentic_quickstart", help="working directory")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sft-steps", type=int, default=None, help="override the SFT max_steps")
    parser.add_argument("--rl-steps", type=int, default=None, help="override the agentic RL max_steps")
    parser.add_argument("--teacher-episodes", type=int, default=TEACHER_EPISODES)
    args = parser.parse_args(argv)

    from roll.pipelines import agentic, sft

    out = Path(args.out).resolve()
    started = time.time()
    base = prepare_base_model(out, args.seed)
    rows = out / "data" / "teacher_turns.jsonl"
    write_teacher_rows(rows, args.seed, args.teacher_episodes)
    sft_overrides = [
        f"seed={args.seed}",
        f"output_dir={out}/sft",
        f"actor_train.model_path={base}",
        f"data.train_path={rows}",
    ]
    if args.sft_steps:
        sft_overrides.append(f"max_steps={args.sft_steps}")
    sft_result = sft.run(load_config(str(REPO / "configs/agentic/guess_number_sft.yaml"), sft_overrides))
    logger.info("SFT done in %.0f s", time.time() - started)

    rl_overrides = [
        f"seed={args.seed}",
        f"output_dir={out}/rl",
        f"actor_train.model_path={sft_result['hf_model']}",
    ]
    if args.rl_steps:
        rl_overrides.append(f"max_steps={args.rl_steps}")
    summary = agentic.run(load_config(str(REPO / "configs/agentic/guess_number.yaml"), rl_overrides))
    before = summary["val_before"]["val/success_rate"]
    after = summary["val_after"]["val/success_rate"]
    logger.info(
        "agentic quickstart finished in %.0f s; metrics in %s/rl/metrics.jsonl", time.time() - started, out
    )
    sys.stdout.write(f"held-out success rate: {before:.3f} -> {after:.3f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
