"""The quickstart: SFT then GRPO on a tiny model, on CPU, through Ray workers and Megatron-Core.

    bash launch/quickstart.sh            # sets up .venv, then runs this script
    python launch/quickstart.py --out ./outputs/quickstart

1. Writes the synthetic addition task (a sloppy teacher who forgets carries), a character tokenizer
   and a randomly initialised tiny Qwen2-shaped model (no downloads).
2. SFT (configs/quickstart/sft.yaml) on the noisy demonstrations: the policy learns the format and
   the teacher's mistakes; greedy held-out accuracy plateaus near the share of carry-free sums.
3. GRPO (configs/quickstart/rlvr_grpo.yaml) with the exact-answer reward raises it.
The last line printed is `held-out accuracy: <before> -> <after>`.
"""

import argparse
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from roll.config.loader import load_config  # noqa: E402
from roll.data.synthetic import build_char_tokenizer, write_quickstart_data  # noqa: E402
from roll.models.tiny import save_tiny_hf_model  # noqa: E402
from roll.utils.logging import get_logger  # noqa: E402

logger = get_logger("roll.quickstart")

# Sizes validated for this task (see roll/data/synthetic.py): ~140k parameters.
MODEL = dict(
    hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)


def prepare_base_model(out: Path, seed: int, model: dict | None = None) -> Path:
    """The char tokenizer and a random tiny Qwen2 (`MODEL` sizes) in `out/base_model` (idempotent)."""
    base = out / "base_model"
    if not (base / "model.safetensors").is_file():
        tokenizer_dir = build_char_tokenizer(out / "tokenizer")
        sizes = model or MODEL
        save_tiny_hf_model("qwen2", base, seed=seed, vocab_size=128, tie_word_embeddings=False, **sizes)
        for item in tokenizer_dir.iterdir():
            shutil.copy(item, base / item.name)
    return base


def prepare(out: Path, seed: int) -> None:
    """Data, tokenizer and the random base model under `out` (idempotent: reuses what exists)."""
    data_dir = out / "data"
    if not (data_dir / "val.jsonl").is_file():
        write_quickstart_data(data_dir, seed)
    prepare_base_model(out, seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="./outputs/quickstart", help="working directory of the quickstart")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sft-steps", type=int, default=None, help="override sft max_steps")
    parser.add_argument("--rl-steps", type=int, default=None, help="override rlvr max_steps")
    args = parser.parse_args(argv)

    from roll.pipelines import rlvr, sft

    out = Path(args.out).resolve()
    started = time.time()
    prepare(out, args.seed)
    common = [f"seed={args.seed}"]
    sft_overrides = [
        *common,
        f"output_dir={out}/sft",
        f"actor_train.model_path={out}/base_model",
        f"data.train_path={out}/data/train_sft.jsonl",
        f"data.val_path={out}/data/val.jsonl",
    ]
    if args.sft_steps:
        sft_overrides.append(f"max_steps={args.sft_steps}")
    sft_cfg = load_config(str(REPO / "configs/quickstart/sft.yaml"), sft_overrides)
    sft_result = sft.run(sft_cfg)
    logger.info("SFT done in %.0f s", time.time() - started)

    rl_overrides = [
        *common,
        f"output_dir={out}/grpo",
        f"actor_train.model_path={sft_result['hf_model']}",
        f"data.train_path={out}/data/train_rl.jsonl",
        f"data.val_path={out}/data/val.jsonl",
    ]
    if args.rl_steps:
        rl_overrides.append(f"max_steps={args.rl_steps}")
    rl_cfg = load_config(str(REPO / "configs/quickstart/rlvr_grpo.yaml"), rl_overrides)
    summary = rlvr.run(rl_cfg)
    before = summary["val_before"]["val/accuracy"]
    after = summary["val_after"]["val/accuracy"]
    logger.info("quickstart finished in %.0f s; metrics in %s/grpo/metrics.jsonl", time.time() - started, out)
    sys.stdout.write(f"held-out accuracy: {before:.3f} -> {after:.3f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
