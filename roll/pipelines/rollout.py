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


def outputs_to_batch(
    items: Sequence[dict[str, Any]], outputs: Sequence[GenerationOutput], tokenizer, pad_id: int
) -> Batch:
    """Flatten n samples per prompt into rows (prompt i's samples are rows i*n .. i*n+n-1)."""
    rows: list[tuple[list[int], list[int], list[float]]] = []
    group_index, answers, texts, finish = [], [], [], []
    for prompt_number, (item, output) in enumerate(zip(items, outputs)):
        for sample in output.samples:
            rows.append((list(output.prompt_ids), list(sample.token_ids), list(sample.logprobs)))
            group_index.append(prompt_number)
            answers.append(item.get("answer", ""))
            texts.append(tokenizer.decode(sample.token_ids, skip_special_tokens=True))
            finish.append(sample.finish_reason)
    width = max(len(prompt) + len(response) for prompt, response, _ in rows)
    size = len(rows)
    input_ids = torch.full((size, width), pad_id, dtype=torch.int64)
    attention_mask = torch.zeros(size, width, dtype=torch.int64)
    response_mask = torch.zeros(size, width, dtype=torch.float32)
    rollout_log_probs = torch.zeros(size, width, dtype=torch.float32)
    prompt_lengths = torch.zeros(size, dtype=torch.int64)
    response_lengths = torch.zeros(size, dtype=torch.int64)
    for row, (prompt, response, logprobs) in enumerate(rows):
        start, end = len(prompt), len(prompt) + len(response)
        input_ids[row, :end] = torch.tensor(prompt + response, dtype=torch.int64)
        attention_mask[row, :end] = 1
        response_mask[row, start:end] = 1.0
        if logprobs:
            rollout_log_probs[row, start:end] = torch.tensor(logprobs, dtype=torch.float32)
        prompt_lengths[row], response_lengths[row] = start, end - start
    return Batch.from_dict(
        {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": torch.arange(width, dtype=torch.int64).expand(size, width).clone(),
            "response_mask": response_mask,
            "rollout_log_probs": rollout_log_probs,
            "prompt_lengths": prompt_lengths,
            "response_lengths": response_lengths,
            "group_index": torch.tensor(group_index, dtype=torch.int64),
            "answer": np.array(answers, dtype=object),
            "response_text": np.array(texts, dtype=object),
            "finish_reason": np.array(finish, dtype=object),
        }
    )
