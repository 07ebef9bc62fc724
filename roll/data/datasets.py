"""Tokenised datasets: `PromptDataset` (RL prompts + reference answers) and `SFTDataset`
(prompt + completion with a loss mask on completion tokens), each with seeded per-epoch shuffling
and a resumable cursor; `collate_sft` pads SFT items into the shared right-padded batch layout.

Rows that cannot be used (missing key, empty, overlong, malformed prompt) are skipped and counted
in `.stats`; a dataset with no usable row is an error that shows those counts.
"""

import json
from typing import Any

import numpy as np
import torch

from roll.config.pipeline import DataConfig
from roll.data.templates import PromptFormatError, encode_prompt
from roll.utils.logging import get_logger

logger = get_logger(__name__)

SKIP_REASONS = ("missing_key", "empty", "malformed", "overlong")


class EpochCursor:
    """Seeded order over `size` items, one permutation per epoch, and a resumable (epoch, position)."""

    def __init__(self, size: int, seed: int, shuffle: bool):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.epoch, self.position = 0, 0
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.size)
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def take(self, n: int) -> list[int]:
        """The next `n` indices, continuing into the next epoch (reshuffled) when this one runs out."""
        indices: list[int] = []
        while len(indices) < n:
            if self.position == self.size:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._epoch_order(self.epoch)
            step = min(n - len(indices), self.size - self.position)
            indices.extend(self._order[self.position : self.position + step].tolist())
            self.position += step
        return indices

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "size": self.size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["size"] != self.size or state["seed"] != self.seed:
            raise ValueError(
                f"data cursor state is for {state['size']} rows with seed {state['seed']}, but this dataset has "
                f"{self.size} rows and seed {self.seed}; resume with the same data files and seed"
            )
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._epoch_order(self.epoch)


class _CursorDataset:
    """Items plus skip counts, indexable, with `next_batch` over a seeded epoch cursor."""

    items: list[dict[str, Any]]
    stats: dict[str, int]

    def _finish(self, seed: int, shuffle: bool, num_rows: int) -> None:
        self.stats["rows"], self.stats["kept"] = num_rows, len(self.items)
        if num_rows and not self.items:  # no rows at all (no val_path) is an empty split, not an error
            raise ValueError(
                f"{type(self).__name__}: none of the {num_rows} rows is usable ({self.stats}); check data.prompt_key/"
                "answer_key/response_key and raise data.max_prompt_length/max_length if rows are overlong"
            )
        skipped = {k: self.stats[k] for k in SKIP_REASONS if self.stats[k]}
        if skipped:
            logger.warning(
                f"{type(self).__name__}: kept {len(self.items)} of {num_rows} rows; skipped {skipped}"
            )
        self.cursor = EpochCursor(len(self.items), seed, shuffle)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]

    def next_batch(self, n: int) -> list[dict[str, Any]]:
        """The next `n` items in this epoch's seeded order (wrapping into the next epoch)."""
        return [self.items[i] for i in self.cursor.take(n)]

    def state_dict(self) -> dict[str, int]:
        return self.cursor.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.cursor.load_state_dict(state)


def _empty(value: Any) -> bool:
    return (isinstance(value, str) and not value.strip()) or (isinstance(value, (list, dict)) and not value)


def _answer_text(answer: Any) -> str:
    # Structured answers (a countdown spec) travel as JSON so reward functions always get a str.
    return answer if isinstance(answer, str) else json.dumps(answer)


class PromptDataset(_CursorDataset):
    """RL prompts: items {prompt_ids: list[int], answer: str, raw: dict}; stats count skipped rows."""

    def __init__(self, rows: list[dict[str, Any]], tokenizer, cfg: DataConfig, seed: int = 0):
        self.items, self.stats = [], dict.fromkeys(SKIP_REASONS, 0)
        for row in rows:
            prompt, answer = row.get(cfg.prompt_key), row.get(cfg.answer_key)
            if prompt is None or answer is None:
                self.stats["missing_key"] += 1
                continue
            if _empty(prompt):
                self.stats["empty"] += 1
                continue
            try:
                prompt_ids = encode_prompt(prompt, tokenizer, cfg.template)
            except PromptFormatError:
                self.stats["malformed"] += 1
                continue
            if not prompt_ids:
                self.stats["empty"] += 1
            elif len(prompt_ids) > cfg.max_prompt_length:
                self.stats["overlong"] += 1
            else:
                self.items.append({"prompt_ids": prompt_ids, "answer": _answer_text(answer), "raw": row})
        self._finish(seed, cfg.shuffle, len(rows))


class SFTDataset(_CursorDataset):
    """SFT demonstrations: items {input_ids, loss_mask (1 on completion tokens incl. eos), prompt_length}."""

    def __init__(self, rows: list[dict[str, Any]], tokenizer, cfg: DataConfig, seed: int = 0):
        self.items, self.stats = [], dict.fromkeys(SKIP_REASONS, 0)
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("SFTDataset: the tokenizer has no eos token; completions must end with one")
        for row in rows:
            prompt, completion = row.get(cfg.prompt_key), row.get(cfg.response_key)
            if prompt is None or completion is None:
                self.stats["missing_key"] += 1
                continue
            if _empty(prompt) or _empty(completion):
                self.stats["empty"] += 1
                continue
            if not isinstance(completion, str):
                self.stats["malformed"] += 1
                continue
            try:
                prompt_ids = encode_prompt(prompt, tokenizer, cfg.template)
            except PromptFormatError:
                self.stats["malformed"] += 1
                continue
            completion_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
            if not completion_ids or completion_ids[-1] != eos:
                completion_ids.append(eos)
            input_ids = prompt_ids + completion_ids
            if len(input_ids) > cfg.max_length:
                self.stats["overlong"] += 1
                continue
            loss_mask = [0] * len(prompt_ids) + [1] * len(completion_ids)
            self.items.append(
                {"input_ids": input_ids, "loss_mask": loss_mask, "prompt_length": len(prompt_ids)}
            )
        self._finish(seed, cfg.shuffle, len(rows))


def collate_sft(items: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, position_ids (B, S) int64; response_mask (B, S) float32."""
    if not items:
        raise ValueError("collate_sft: got an empty list of items")
    batch, seq_len = len(items), max(len(item["input_ids"]) for item in items)
    input_ids = torch.full((batch, seq_len), pad_id, dtype=torch.int64)
    attention_mask = torch.zeros(batch, seq_len, dtype=torch.int64)
    response_mask = torch.zeros(batch, seq_len, dtype=torch.float32)
    for row, item in enumerate(items):
        length = len(item["input_ids"])
        input_ids[row, :length] = torch.tensor(item["input_ids"], dtype=torch.int64)
        attention_mask[row, :length] = 1
        response_mask[row, :length] = torch.tensor(item["loss_mask"], dtype=torch.float32)
    position_ids = torch.arange(seq_len, dtype=torch.int64).expand(batch, seq_len).clone()
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "response_mask": response_mask,
    }
