"""The quickstart's synthetic verifiable task (addition from a sloppy teacher) and its char tokenizer.

Task: prompts like ``57+68=`` whose answer is the sum, ``125``. The SFT demonstrations come from
a teacher who, with probability `noise_rate`, forgets the carry out of the units column and
writes ``115``. With `noise_rate` > 0.5 the SFT policy's most likely answer on carry problems is the
wrong one, so greedy accuracy after SFT plateaus near the share of carry-free problems (~55% for
two-digit operands), while sampling still finds the right answer often enough for GRPO with the
exact-answer reward to raise it clearly. Validation operand pairs are disjoint from training pairs.

Validated in plain torch (1 CPU thread, Qwen2 hidden 64, 2 layers, 4 heads, 140k params): SFT for
2000 steps x 64 rows (AdamW lr 3e-3, cosine) -> greedy val accuracy 57%; then GRPO with 8 prompts x
8 samples, T=1.0, lr 1e-4, 150-200 steps -> 84-91%, over ~30 s of RL.

    write_quickstart_data(out_dir, seed)   # train_sft.jsonl, train_rl.jsonl, val.jsonl
    build_char_tokenizer(out_dir)          # tokenizer.json + configs, loadable offline by AutoTokenizer
"""

import functools
import json
import random
from pathlib import Path
from typing import Any

PAD_TOKEN, EOS_TOKEN, BOS_TOKEN, UNK_TOKEN = "<pad>", "<eos>", "<bos>", "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, BOS_TOKEN, UNK_TOKEN)
# Printable ASCII, so the same tokenizer also encodes tags like <answer> or countdown equations.
CHAR_ALPHABET = "".join(chr(c) for c in range(32, 127)) + "\n"

SPLITS = ("train", "val")
# The train/val partition of operand pairs is fixed (independent of the sampling seed) so that
# every seed's training rows stay disjoint from every seed's validation rows.
_PARTITION_SEED = 20240611
VAL_PAIR_FRACTION = 0.1

QUICKSTART_SIZES = {"train_sft": 128000, "train_rl": 4000, "val": 512}
QUICKSTART_NOISE_RATE = 0.65


def forgot_carry_sum(a: int, b: int) -> int:
    """The teacher's mistake: a + b with the carry out of the units column dropped (57+68 -> 115)."""
    return a + b - (10 if (a % 10 + b % 10) >= 10 else 0)


@functools.lru_cache(maxsize=8)
def _operand_pairs(num_digits: int, split: str) -> tuple[tuple[int, int], ...]:
    low, high = 10 ** (num_digits - 1), 10**num_digits - 1
    pairs = [(a, b) for a in range(low, high + 1) for b in range(low, high + 1)]
    random.Random(_PARTITION_SEED).shuffle(pairs)
    num_val = max(1, int(len(pairs) * VAL_PAIR_FRACTION))
    return tuple(pairs[:num_val] if split == "val" else pairs[num_val:])


def generate_task(
    n: int, seed: int, *, split: str = "train", num_digits: int = 2, noise_rate: float = 0.0
) -> list[dict[str, Any]]:
    """`n` addition rows {prompt, answer, completion, noisy} drawn (with replacement) from `split`'s pairs.

    `answer` is always the true sum; `completion` (the SFT target) is the teacher's, which forgets
    the units carry when `noisy` (probability `noise_rate`; identical to `answer` on carry-free pairs).
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {'|'.join(SPLITS)}")
    if not 1 <= num_digits <= 4:
        raise ValueError(f"num_digits={num_digits} must be in [1, 4] (operand pairs are enumerated)")
    if not 0.0 <= noise_rate <= 1.0:
        raise ValueError(f"noise_rate={noise_rate} must be in [0, 1]")
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    pairs = _operand_pairs(num_digits, split)
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = pairs[rng.randrange(len(pairs))]
        noisy = rng.random() < noise_rate
        completion = forgot_carry_sum(a, b) if noisy else a + b
        rows.append(
            {"prompt": f"{a}+{b}=", "answer": str(a + b), "completion": str(completion), "noisy": noisy}
        )
    return rows


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def write_quickstart_data(
    out_dir: str | Path,
    seed: int,
    *,
    sizes: dict[str, int] | None = None,
    noise_rate: float = QUICKSTART_NOISE_RATE,
    num_digits: int = 2,
) -> dict[str, Path]:
    """Write train_sft.jsonl (noisy teacher), train_rl.jsonl and val.jsonl (true sums); return their paths."""
    sizes = {**QUICKSTART_SIZES, **(sizes or {})}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Distinct seeds per file so RL prompts are not the SFT rows replayed in the same order.
    specs: dict[str, dict[str, Any]] = {
        "train_sft": dict(split="train", noise_rate=noise_rate, seed=seed),
        "train_rl": dict(split="train", noise_rate=0.0, seed=seed + 1),
        "val": dict(split="val", noise_rate=0.0, seed=seed + 2),
    }
    paths = {}
    for name, spec in specs.items():
        paths[name] = out / f"{name}.jsonl"
        _write_jsonl(paths[name], generate_task(sizes[name], num_digits=num_digits, **spec))
    return paths


def build_char_tokenizer(out_dir: str | Path, alphabet: str = CHAR_ALPHABET) -> Path:
    """Save a character-level HF tokenizer (one id per char of `alphabet`, plus <pad> <eos> <bos> <unk>).

    Encoding prepends <bos>; decoding joins characters with no separator. Loadable offline with
    `AutoTokenizer.from_pretrained(out_dir)`.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = list(dict.fromkeys(alphabet))
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *chars])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B", special_tokens=[(BOS_TOKEN, vocab[BOS_TOKEN])]
    )
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out)
    # The generic class name and an explicit special-tokens map keep older transformers able to load it.
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2))
    special = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN, "unk_token": UNK_TOKEN}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return out
