"""Convert GSM8K (openai/gsm8k, config "main": columns `question`, `answer` ending in "#### <number>")
into ROLL's RL rows, one jsonl file per split, for configs/gpu/qwen2.5-0.5b_gsm8k_grpo.yaml.

    python launch/prepare_gsm8k.py                       # downloads it with `datasets` (pip install datasets)
    python launch/prepare_gsm8k.py --train train.parquet --test test.parquet   # local .parquet/.jsonl files
    python launch/prepare_gsm8k.py --out /shared/data/gsm8k --prompt-format text

Writes OUT/train.jsonl and OUT/test.jsonl (default OUT: ./outputs/data/gsm8k), one row per problem:
    {"prompt": [{"role": "user", "content": "<question>\\n\\n<instruction>"}], "answer": "72", "id": "train-0"}
`answer` is the number after the last "####" (thousands commas removed). Rows without a question or
without a numeric final answer are skipped and counted; the counts are printed per split.
"""

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Optional

# Qwen2.5's math prompt: the answer lands in \boxed{}, which the math_exact reward reads first.
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
PROMPT_FORMATS = ("chat", "text")
SKIP_REASONS = ("missing_field", "empty_question", "no_final_answer", "non_numeric_answer")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def final_answer(solution: str) -> Optional[str]:
    """The number after the last "####" of a GSM8K solution ("1,234" -> "1234"), or None."""
    if "####" not in solution:
        return None
    answer = solution.rsplit("####", 1)[1].strip().replace(",", "").rstrip(".")
    return answer if _NUMBER.fullmatch(answer) else None


def convert_rows(
    rows: list[Any], split: str, prompt_format: str = "chat", instruction: str = INSTRUCTION
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """ROLL rows {prompt, answer, id} from GSM8K rows {question, answer}, and counts: rows, kept and
    one per skip reason (missing_field, empty_question, no_final_answer, non_numeric_answer)."""
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format={prompt_format!r} is not one of {'|'.join(PROMPT_FORMATS)}")
    kept: list[dict[str, Any]] = []
    stats = {"rows": len(rows), "kept": 0, **dict.fromkeys(SKIP_REASONS, 0)}
    for index, row in enumerate(rows):
        question = row.get("question") if isinstance(row, dict) else None
        solution = row.get("answer") if isinstance(row, dict) else None
        if not isinstance(question, str) or not isinstance(solution, str):
            stats["missing_field"] += 1
            continue
        if not question.strip():
            stats["empty_question"] += 1
            continue
        answer = final_answer(solution)
        if answer is None:
            stats["no_final_answer" if "####" not in solution else "non_numeric_answer"] += 1
            continue
        text = f"{question.strip()}\n\n{instruction}" if instruction else question.strip()
        prompt: Any = [{"role": "user", "content": text}] if prompt_format == "chat" else text
        kept.append({"prompt": prompt, "answer": answer, "id": f"{split}-{index}"})
    stats["kept"] = len(kept)
    return kept, stats


def _read_split(split: str, path: Optional[str]) -> list[dict[str, Any]]:
    if path is not None:
        from roll.data.io import load_rows

        rows, io_stats = load_rows(path)
        if io_stats["malformed"] or io_stats["non_dict"]:
            print(f"{split}: {path}: skipped {io_stats['malformed'] + io_stats['non_dict']} unreadable lines")
        return rows
    try:
        from datasets import load_dataset
    except ImportError:
        sys.exit("error: `datasets` is not installed; pip install datasets, or pass --train and --test files")
    return [dict(row) for row in load_dataset("openai/gsm8k", "main", split=split)]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", help="local GSM8K train split (.parquet or .jsonl); default: download")
    parser.add_argument("--test", help="local GSM8K test split (.parquet or .jsonl); default: download")
    parser.add_argument("--out", default="./outputs/data/gsm8k", help="output directory")
    parser.add_argument("--prompt-format", choices=PROMPT_FORMATS, default="chat")
    parser.add_argument("--instruction", default=INSTRUCTION, help="appended to each question")
    args = parser.parse_args(argv)
    if (args.train is None) != (args.test is None):
        parser.error("pass both --train and --test, or neither (then both splits are downloaded)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, path in (("train", args.train), ("test", args.test)):
        rows, stats = convert_rows(_read_split(split, path), split, args.prompt_format, args.instruction)
        if not rows:
            print(f"error: {split}: none of the {stats['rows']} rows is usable ({stats})", file=sys.stderr)
            return 1
        target = out / f"{split}.jsonl"
        with target.open("w") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        skipped = {k: stats[k] for k in SKIP_REASONS if stats[k]}
        print(
            f"{split}: kept {stats['kept']} of {stats['rows']} rows -> {target} (skipped: {skipped or 'none'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
