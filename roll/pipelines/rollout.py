"""Driver-side rollout plumbing: prompts -> engine requests -> a right-padded training Batch.

Layout of the Batch (see roll/distributed/batch.py): each row is prompt + response right-padded to
the longest row; `response_mask` is 1 on the sampled tokens; `rollout_log_probs` holds the engine's
per-token log-probs aligned with input_ids; `group_index` names the prompt of each response.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from roll.distributed.batch import Batch
from roll.strategies.engine import GenerationOutput, GenerationRequest, SamplingParams

MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "position_ids", "response_mask")


def make_requests(
    items: Sequence[dict[str, Any]], sampling: SamplingParams, tag: str
) -> list[GenerationRequest]:
    """One request per prompt item; ids `"{tag}-{i}"` are unique per step (they seed the sampling)."""
    return [
        GenerationRequest(request_id=f"{tag}-{i}", prompt_ids=list(item["prompt_ids"]), sampling=sampling)
        for i, item in enumerate(items)
    ]


def padded_token_rows(
    ids: Sequence[Sequence[int]],
    response_masks: Sequence[Sequence[int]],
    logprobs: Sequence[Sequence[float]],
    pad_id: int,
) -> dict[str, torch.Tensor]:
    """Right-padded (B, S) `input_ids`, `attention_mask`, `position_ids`, `response_mask` and
    `rollout_log_probs` from per-row token ids, policy-token masks and log-probs (each (L_i,))."""
    width = max(len(row) for row in ids)
    size = len(ids)
    input_ids = torch.full((size, width), pad_id, dtype=torch.int64)
    attention_mask = torch.zeros(size, width, dtype=torch.int64)
    response_mask = torch.zeros(size, width, dtype=torch.float32)
    rollout_log_probs = torch.zeros(size, width, dtype=torch.float32)
    for row, (tokens, mask, logps) in enumerate(zip(ids, response_masks, logprobs)):
        length = len(tokens)
        input_ids[row, :length] = torch.tensor(tokens, dtype=torch.int64)
        attention_mask[row, :length] = 1
        response_mask[row, :length] = torch.tensor(mask, dtype=torch.float32)
        rollout_log_probs[row, :length] = torch.tensor(logps, dtype=torch.float32)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": torch.arange(width, dtype=torch.int64).expand(size, width).clone(),
        "response_mask": response_mask,
        "rollout_log_probs": rollout_log_probs,
    }


def outputs_to_batch(
    items: Sequence[dict[str, Any]], outputs: Sequence[GenerationOutput], tokenizer, pad_id: int
) -> Batch:
    """Flatten n samples per prompt into rows (prompt i's samples are rows i*n .. i*n+n-1)."""
    ids: list[list[int]] = []
    masks: list[list[int]] = []
    logprobs: list[list[float]] = []
    prompt_lengths, response_lengths = [], []
    group_index, answers, texts, finish = [], [], [], []
    for prompt_number, (item, output) in enumerate(zip(items, outputs)):
        prompt = list(output.prompt_ids)
        for sample in output.samples:
            response = list(sample.token_ids)
            ids.append(prompt + response)
            masks.append([0] * len(prompt) + [1] * len(response))
            logprobs.append([0.0] * len(prompt) + (list(sample.logprobs) or [0.0] * len(response)))
            prompt_lengths.append(len(prompt))
            response_lengths.append(len(response))
            group_index.append(prompt_number)
            answers.append(item.get("answer", ""))
            texts.append(tokenizer.decode(sample.token_ids, skip_special_tokens=True))
            finish.append(sample.finish_reason)
    return Batch.from_dict(
        {
            **padded_token_rows(ids, masks, logprobs, pad_id),
            "prompt_lengths": torch.tensor(prompt_lengths, dtype=torch.int64),
            "response_lengths": torch.tensor(response_lengths, dtype=torch.int64),
            "group_index": torch.tensor(group_index, dtype=torch.int64),
            "answer": np.array(answers, dtype=object),
            "response_text": np.array(texts, dtype=object),
            "finish_reason": np.array(finish, dtype=object),
        }
    )
