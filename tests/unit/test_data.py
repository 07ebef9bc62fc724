"""Data loading: jsonl/parquet round trips, skipped rows counted exactly, the SFT collate layout
against a hand-built batch, the resumable cursor, templates and the char tokenizer."""

import json

import pytest
import torch

from roll.config.pipeline import DataConfig
from roll.data import PromptDataset, SFTDataset, collate_sft, encode_prompt, load_rows, load_tokenizer
from roll.data.synthetic import build_char_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return load_tokenizer(build_char_tokenizer(tmp_path_factory.mktemp("tok")))


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


ROWS = [
    {"prompt": "1+2=", "answer": "3", "completion": "3", "extra": []},
    {"prompt": "10+20=", "answer": "30", "completion": "30", "extra": [1, 2]},
    {"prompt": "countdown", "answer": {"target": 3, "numbers": [1, 2]}, "completion": "1+2"},
]


def test_jsonl_and_parquet_round_trip(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = write_lines(tmp_path / "rows.jsonl", [json.dumps(r) for r in ROWS[:2]])
    pq.write_table(pa.Table.from_pylist(ROWS[:2]), tmp_path / "rows.parquet")
    for path in (jsonl, tmp_path / "rows.parquet"):
        rows, stats = load_rows(path)
        assert rows == ROWS[:2]
        assert stats == {"rows": 2, "malformed": 0, "non_dict": 0}


def test_jsonl_malformed_and_non_dict_lines_are_counted(tmp_path):
    lines = [
        json.dumps(ROWS[0]),
        "{not json",
        "",
        "[1, 2]",
        "42",
        json.dumps(ROWS[1]),
        '{"prompt": "x"',
        "  ",
    ]
    rows, stats = load_rows(write_lines(tmp_path / "bad.jsonl", lines))
    assert rows == ROWS[:2]
    assert stats == {"rows": 2, "malformed": 2, "non_dict": 2}
    (tmp_path / "binary.jsonl").write_bytes(b'{"prompt": "ok", "answer": "1"}\n\xff\xfe garbage\n')
    rows, stats = load_rows(tmp_path / "binary.jsonl")
    assert rows == [{"prompt": "ok", "answer": "1"}] and stats["malformed"] == 1


def test_load_rows_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_rows(tmp_path / "missing.jsonl")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match="not a readable parquet file"):
        load_rows(tmp_path / "broken.parquet")
    (tmp_path / "rows.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="suffix '.csv'"):
        load_rows(tmp_path / "rows.csv")


def test_char_tokenizer_round_trip(tokenizer):
    text = "57+68=125 <answer>(3*4)-1</answer>\n"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and len(ids) == len(text) + 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.convert_ids_to_tokens(ids[1:4]) == ["5", "7", "+"]
    assert len({tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id}) == 3
    assert tokenizer("12", add_special_tokens=False)["input_ids"] == tokenizer.convert_tokens_to_ids(
        ["1", "2"]
    )


def test_load_tokenizer_errors_and_pad_default(tmp_path, tokenizer):
    with pytest.raises(FileNotFoundError, match="tokenizer directory"):
        load_tokenizer(tmp_path / "nope")
    out = tmp_path / "nopad"
    tokenizer.save_pretrained(out)
    config = json.loads((out / "tokenizer_config.json").read_text())
    config.pop("pad_token")
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    (out / "special_tokens_map.json").unlink(missing_ok=True)
    reloaded = load_tokenizer(out)
    assert reloaded.pad_token_id == reloaded.eos_token_id == tokenizer.eos_token_id


def test_prompt_dataset_skips_and_counts(tokenizer):
    rows = [
        {"prompt": "1+2=", "answer": "3"},  # kept: 5 tokens with <bos>
        {"prompt": "1+2+3=", "answer": "6"},  # overlong: 7 tokens > 6
        {"prompt": "12345", "answer": "0"},  # kept: exactly 6 tokens
        {"prompt": "   ", "answer": "1"},  # empty
        {"prompt": "1="},  # missing answer
        {"question": "1=", "answer": "1"},  # missing prompt
        {"prompt": [{"role": "user", "content": "hi"}], "answer": "1"},  # plain template needs text
        {"prompt": "cd", "answer": {"target": 3, "numbers": [1, 2]}},  # kept, answer as JSON
    ]
    cfg = DataConfig(max_prompt_length=6, shuffle=False)
    dataset = PromptDataset(rows, tokenizer, cfg)
    assert dataset.stats == {
        "missing_key": 2,
        "empty": 1,
        "malformed": 1,
        "overlong": 1,
        "rows": 8,
        "kept": 3,
    }
    bos = tokenizer.bos_token_id
    ids_of = tokenizer.convert_tokens_to_ids
    assert dataset[0]["prompt_ids"] == [bos, *ids_of(["1", "+", "2", "="])]
    assert dataset[0]["answer"] == "3" and dataset[0]["raw"] is rows[0]
    assert json.loads(dataset[2]["answer"]) == {"target": 3, "numbers": [1, 2]}
    with pytest.raises(ValueError, match="none of the 2 rows is usable"):
        PromptDataset(rows[3:5], tokenizer, cfg)


def test_sft_dataset_masks_and_overlong(tokenizer):
    rows = [
        {"prompt": "1+2=", "completion": "3"},  # 5 + 2 = 7 tokens: kept
        {"prompt": "10+20=", "completion": "30"},  # 7 + 3 = 10 tokens > 8: overlong
        {"prompt": "9=", "completion": ""},  # empty completion
        {"prompt": "9=", "completion": 9},  # non-text completion
        {"prompt": "7=", "answer": "7"},  # missing completion
    ]
    dataset = SFTDataset(rows, tokenizer, DataConfig(max_length=8, shuffle=False))
    assert dataset.stats == {
        "missing_key": 1,
        "empty": 1,
        "malformed": 1,
        "overlong": 1,
        "rows": 5,
        "kept": 1,
    }
    item = dataset[0]
    eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id
    assert item["input_ids"] == [bos, *tokenizer.convert_tokens_to_ids(["1", "+", "2", "=", "3"]), eos]
    assert item["loss_mask"] == [0, 0, 0, 0, 0, 1, 1] and item["prompt_length"] == 5


def test_collate_sft_layout():
    items = [
        {"input_ids": [5, 6, 7, 8], "loss_mask": [0, 0, 1, 1]},
        {"input_ids": [9, 10], "loss_mask": [0, 1]},
        {"input_ids": [11, 12, 13, 14, 15], "loss_mask": [0, 0, 0, 1, 1]},
    ]
    batch = collate_sft(items, pad_id=0)
    expected_ids = torch.tensor([[5, 6, 7, 8, 0], [9, 10, 0, 0, 0], [11, 12, 13, 14, 15]])
    expected_attention = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    expected_response = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 0, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.float32)
    expected_positions = torch.tensor([[0, 1, 2, 3, 4]] * 3)
    assert set(batch) == {"input_ids", "attention_mask", "position_ids", "response_mask"}
    assert batch["input_ids"].dtype == torch.int64 and torch.equal(batch["input_ids"], expected_ids)
    assert batch["attention_mask"].dtype == torch.int64 and torch.equal(
        batch["attention_mask"], expected_attention
    )
    assert batch["position_ids"].dtype == torch.int64 and torch.equal(
        batch["position_ids"], expected_positions
    )
    assert batch["response_mask"].dtype == torch.float32 and torch.equal(
        batch["response_mask"], expected_response
    )


def test_cursor_epochs_are_seeded_permutations_and_resumable(tokenizer):
    rows = [{"prompt": str(i), "answer": str(i)} for i in range(10)]
    cfg = DataConfig(shuffle=True)
    dataset = PromptDataset(rows, tokenizer, cfg, seed=7)
    answers = [item["answer"] for item in dataset.next_batch(4) + dataset.next_batch(4)]
    state = dataset.state_dict()
    assert state["epoch"] == 0 and state["position"] == 8
    rest = [item["answer"] for item in dataset.next_batch(6)]  # 2 from epoch 0, 4 from epoch 1
    first_epoch = answers + rest[:2]
    assert sorted(first_epoch, key=int) == [str(i) for i in range(10)] and first_epoch != sorted(
        first_epoch, key=int
    )
    assert dataset.state_dict()["epoch"] == 1 and dataset.state_dict()["position"] == 4

    resumed = PromptDataset(rows, tokenizer, cfg, seed=7)
    resumed.load_state_dict(state)
    assert [item["answer"] for item in resumed.next_batch(6)] == rest
    other_seed = PromptDataset(rows, tokenizer, cfg, seed=8)
    assert [item["answer"] for item in other_seed.next_batch(10)] != first_epoch
    with pytest.raises(ValueError, match="same data files and seed"):
        other_seed.load_state_dict(state)

    in_order = PromptDataset(rows, tokenizer, DataConfig(shuffle=False))
    assert [item["answer"] for item in in_order.next_batch(12)] == [str(i) for i in [*range(10), 0, 1]]


class ChatTokenizerStub:
    """Records the chat-template call; tokenises by characters (independent of the code under test)."""

    chat_template = "stub"

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        assert add_generation_prompt is True and tokenize is False
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([0] if add_special_tokens else []) + [ord(c) for c in text]}


def test_templates():
    stub = ChatTokenizerStub()
    assert encode_prompt("hi", stub, "plain") == [0, ord("h"), ord("i")]
    expected = [ord(c) for c in "<user>hi<assistant>"]
    assert encode_prompt("hi", stub, "chat") == expected
    assert encode_prompt([{"role": "user", "content": "hi"}], stub, "chat") == expected
    with pytest.raises(ValueError, match="no chat_template"):
        encode_prompt("hi", type("NoChat", (), {"chat_template": None})(), "chat")
