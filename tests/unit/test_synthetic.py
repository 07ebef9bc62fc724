"""The quickstart's synthetic addition task: true answers, the teacher's noise (rate and kind) checked by
an independent digit-by-digit computation, disjoint train/val pairs, and the written files."""

import json
import math
import re

import pytest

from roll.data.synthetic import generate_task, write_quickstart_data

PROMPT = re.compile(r"(\d+)\+(\d+)=")


def operands(row):
    match = PROMPT.fullmatch(row["prompt"])
    assert match, row
    return int(match.group(1)), int(match.group(2))


def schoolbook_without_units_carry(a: int, b: int) -> int:
    """Column addition where the carry out of the units column is forgotten (independent of the code)."""
    units = (a % 10 + b % 10) % 10
    rest = a // 10 + b // 10  # the higher columns with their own carries
    return rest * 10 + units


def test_answers_are_true_sums_and_noise_forgets_the_units_carry():
    rows = generate_task(3000, seed=3, noise_rate=0.65)
    for row in rows:
        a, b = operands(row)
        assert 10 <= a <= 99 and 10 <= b <= 99
        assert int(row["answer"]) == a + b
        expected = schoolbook_without_units_carry(a, b) if row["noisy"] else a + b
        assert int(row["completion"]) == expected, row
    wrong = sum(row["completion"] != row["answer"] for row in rows)
    carries = sum((operands(r)[0] % 10 + operands(r)[1] % 10) >= 10 for r in rows)
    noisy_carries = sum(r["noisy"] and (operands(r)[0] % 10 + operands(r)[1] % 10) >= 10 for r in rows)
    assert wrong == noisy_carries and 0.40 < carries / len(rows) < 0.50  # 45 of 100 digit pairs carry


@pytest.mark.parametrize("noise_rate", [0.0, 0.3, 0.65, 1.0])
def test_noise_rate_matches_config(noise_rate):
    n = 4000
    rows = generate_task(n, seed=11, noise_rate=noise_rate)
    observed = sum(row["noisy"] for row in rows) / n
    tolerance = 4 * math.sqrt(noise_rate * (1 - noise_rate) / n) + 1e-9
    assert abs(observed - noise_rate) <= tolerance


def test_splits_are_disjoint_and_seeds_deterministic():
    train = {operands(r) for r in generate_task(20000, seed=0, split="train")}
    val = {operands(r) for r in generate_task(5000, seed=1, split="val")}
    assert not train & val and len(val) > 500
    assert generate_task(50, seed=5) == generate_task(50, seed=5) != generate_task(50, seed=6)
    three_digit = generate_task(100, seed=0, num_digits=3)
    assert all(100 <= a <= 999 and 100 <= b <= 999 for a, b in map(operands, three_digit))


def test_bad_arguments():
    with pytest.raises(ValueError, match="split='test'"):
        generate_task(1, 0, split="test")
    with pytest.raises(ValueError, match="noise_rate=1.5"):
        generate_task(1, 0, noise_rate=1.5)


def test_write_quickstart_data(tmp_path):
    sizes = {"train_sft": 300, "train_rl": 200, "val": 100}
    paths = write_quickstart_data(tmp_path, seed=0, sizes=sizes, noise_rate=0.5)
    files = {
        name: [json.loads(line) for line in path.read_text().splitlines()] for name, path in paths.items()
    }
    assert {name: len(rows) for name, rows in files.items()} == sizes
    assert any(r["completion"] != r["answer"] for r in files["train_sft"])
    for name in ("train_rl", "val"):
        assert all(int(r["answer"]) == sum(operands(r)) == int(r["completion"]) for r in files[name])
    assert not {operands(r) for r in files["val"]} & {
        operands(r) for r in files["train_sft"] + files["train_rl"]
    }


def test_char_tokenizer_in_a_model_dir_keeps_every_character(tmp_path):
    """Beside a model's config.json the char tokenizer must still encode spaces and newlines (a plain
    AutoTokenizer would load the model type's tokenizer class, which drops them)."""
    import shutil

    from roll.data.synthetic import build_char_tokenizer
    from roll.data.tokenizer import load_tokenizer
    from roll.models.tiny import save_tiny_hf_model

    model_dir = save_tiny_hf_model("qwen2", tmp_path / "model")
    for item in build_char_tokenizer(tmp_path / "tok").iterdir():
        shutil.copy(item, model_dir / item.name)
    tokenizer = load_tokenizer(model_dir)
    text = "Guess a number from 1 to 8.\n4\n4 is too low.\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer("\n", add_special_tokens=False)["input_ids"] == [tokenizer.convert_tokens_to_ids("\n")]
