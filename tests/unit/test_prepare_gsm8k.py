"""launch/prepare_gsm8k.py's conversion on hand-written GSM8K rows (the script itself, which downloads
or reads the user's files, is never run here): kept rows, skip counts, and agreement with math_exact."""

import importlib.util
from pathlib import Path

import pytest

from roll.rewards.rule_math import math_exact

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("prepare_gsm8k", REPO / "launch" / "prepare_gsm8k.py")
prepare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prepare)

SOLUTION = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
ROWS = [
    {
        "question": "Natalia sold clips to 48 of her friends in April. How many in April and May?",
        "answer": SOLUTION,
    },
    {"question": "  How much is 1000 + 234?  ", "answer": "It is 1,234.\n#### 1,234"},
    {"question": "What is 2 - 7?", "answer": "2 - 7 = -5\n#### -5"},
    {"question": "Half of one?", "answer": "#### 0.5"},
    {"question": "No final answer line", "answer": "It is 12."},  # no "####"
    {"question": "Words", "answer": "#### twelve"},  # not a number
    {"question": "Empty final", "answer": "####   "},  # not a number
    {"question": "   ", "answer": "#### 3"},  # empty question
    {"question": "Answer missing"},  # no answer column
    {"question": None, "answer": "#### 1"},  # null question
    {"question": "Answer is a number, not text", "answer": 4},
    "not a row",
]


def test_final_answer():
    assert prepare.final_answer(SOLUTION) == "72"
    assert prepare.final_answer("#### 1,234") == "1234"
    assert prepare.final_answer("a #### 3\n#### 4.") == "4"
    assert prepare.final_answer("#### 3 apples") is None
    assert prepare.final_answer("72") is None


def test_convert_rows_keeps_good_rows_and_counts_each_skip():
    rows, stats = prepare.convert_rows(ROWS, "train")
    assert stats == {
        "rows": 12,
        "kept": 4,
        "missing_field": 4,
        "empty_question": 1,
        "no_final_answer": 1,
        "non_numeric_answer": 2,
    }
    assert [row["answer"] for row in rows] == ["72", "1234", "-5", "0.5"]
    assert [row["id"] for row in rows] == ["train-0", "train-1", "train-2", "train-3"]
    assert rows[1]["prompt"] == [
        {
            "role": "user",
            "content": "How much is 1000 + 234?\n\n"
            "Please reason step by step, and put your final answer within \\boxed{}.",
        }
    ]


def test_text_prompts_and_no_instruction():
    rows, _ = prepare.convert_rows(ROWS[:1], "test", prompt_format="text", instruction="")
    assert rows == [{"prompt": ROWS[0]["question"], "answer": "72", "id": "test-0"}]
    with pytest.raises(ValueError, match="prompt_format='xml' is not one of chat|text"):
        prepare.convert_rows(ROWS, "test", prompt_format="xml")


def test_answers_are_what_math_exact_rewards():
    rows, _ = prepare.convert_rows(ROWS, "train")
    # The reward reads our answer column: a boxed model answer scores 1, a wrong one 0, and the
    # original GSM8K solution (its own "#### n" line) agrees with the converted answer.
    for row, source in zip(rows, ROWS[:4]):
        assert math_exact(f"So the result is \\boxed{{{row['answer']}}}.", row["answer"]) == 1.0
        assert math_exact("\\boxed{999999}", row["answer"]) == 0.0
        assert math_exact(source["answer"], row["answer"]) == 1.0
