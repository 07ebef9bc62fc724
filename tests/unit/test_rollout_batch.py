"""Single-turn rollouts -> Batch rows: prompt + response right-padded, masks, log-probs, groups."""

from roll.pipelines.rollout import outputs_to_batch
from roll.strategies.engine import GeneratedSample, GenerationOutput


class DigitTokenizer:
    """Decodes ids as digits (enough for the response texts the batch keeps)."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(str(i % 10) for i in ids)


def test_rows_are_prompt_then_response_right_padded():
    items = [{"answer": "12"}, {"answer": "7"}]
    outputs = [
        GenerationOutput(
            request_id="a",
            prompt_ids=[1, 2, 3],
            samples=[
                GeneratedSample(token_ids=[4, 5], logprobs=[-0.5, -0.25], finish_reason="stop"),
                GeneratedSample(token_ids=[6], logprobs=[-1.0], finish_reason="length"),
            ],
        ),
        GenerationOutput(
            request_id="b",
            prompt_ids=[9],
            samples=[
                GeneratedSample(token_ids=[7, 8, 9, 1], logprobs=[], finish_reason="stop"),
                GeneratedSample(token_ids=[2], logprobs=[-2.0], finish_reason="stop"),
            ],
        ),
    ]
    batch = outputs_to_batch(items, outputs, DigitTokenizer(), pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5], [1, 2, 3, 6, 0], [9, 7, 8, 9, 1], [9, 2, 0, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1] * 5, [1, 1, 0, 0, 0]]
    assert batch.response_mask.tolist() == [
        [0, 0, 0, 1, 1],
        [0, 0, 0, 1, 0],
        [0, 1, 1, 1, 1],
        [0, 1, 0, 0, 0],
    ]
    # Exact: these values are representable in float32.
    assert batch.tensors["rollout_log_probs"].tolist() == [
        [0, 0, 0, -0.5, -0.25],
        [0, 0, 0, -1.0, 0],
        [0] * 5,
        [0, -2.0, 0, 0, 0],
    ]
    assert batch.position_ids.tolist() == [list(range(5))] * 4
    assert batch.tensors["group_index"].tolist() == [0, 0, 1, 1]
    assert batch.tensors["prompt_lengths"].tolist() == [3, 3, 1, 1]
    assert batch.tensors["response_lengths"].tolist() == [2, 1, 4, 1]
    assert list(batch["answer"]) == ["12", "12", "7", "7"]
    assert list(batch["response_text"]) == ["45", "6", "7891", "2"]
    assert list(batch["finish_reason"]) == ["stop", "length", "stop", "stop"]
