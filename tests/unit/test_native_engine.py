"""The native rollout engine against transformers: greedy generation, log-probs, shared prefill,
seeded sampling, truncation edge cases, stop/length/abort, weight updates, input errors."""

import asyncio

import pytest
import torch
from transformers import AutoModelForCausalLM

from roll.config.generation import GenerationConfig
from roll.models.native import iter_safetensors
from roll.models.tiny import save_tiny_hf_model
from roll.strategies.engine import (
    GenerationRequest,
    RolloutEngine,
    SamplingParams,
    sampling_params_from_config,
)
from roll.strategies.native_engine import NativeEngine

PROMPT_LENGTHS = [3, 9, 1, 6]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_hf_model("qwen2", tmp_path_factory.mktemp("engine") / "qwen2")


@pytest.fixture(scope="module")
def hf_model(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


@pytest.fixture
def engine(model_dir):
    return NativeEngine(str(model_dir), max_batch_size=16, seed=7)


def prompts(lengths=PROMPT_LENGTHS, seed=0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 128, (n,), generator=gen).tolist() for n in lengths]


def requests(prompt_list, **sampling) -> list[GenerationRequest]:
    params = SamplingParams(**sampling)
    return [
        GenerationRequest(request_id=f"r{i}", prompt_ids=p, sampling=params)
        for i, p in enumerate(prompt_list)
    ]


def generate(engine, reqs):
    return asyncio.run(engine.generate(reqs))


def hf_response_logits(hf_model, prompt, response) -> torch.Tensor:
    """(T, V) transformers logits that predicted each response token."""
    with torch.no_grad():
        logits = hf_model(torch.tensor([prompt + response])).logits[0]
    return logits[len(prompt) - 1 : len(prompt) - 1 + len(response)]


def test_engine_satisfies_the_protocol(engine):
    assert isinstance(engine, RolloutEngine)


def test_greedy_matches_transformers_generate(engine, hf_model):
    prompt_list = prompts()
    outputs = generate(engine, requests(prompt_list, temperature=0.0, max_new_tokens=8))
    for prompt, output in zip(prompt_list, outputs):
        reference = hf_model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=8)
        assert output.prompt_ids == prompt
        assert output.samples[0].token_ids == reference[0, len(prompt) :].tolist()
        assert output.samples[0].finish_reason == "length"


def test_logprobs_are_log_softmax_of_temperature_scaled_logits(engine, hf_model):
    prompt_list = prompts()
    outputs = generate(engine, requests(prompt_list, n=2, temperature=0.7, top_k=20, max_new_tokens=6))
    for prompt, output in zip(prompt_list, outputs):
        for sample in output.samples:
            logits = hf_response_logits(hf_model, prompt, sample.token_ids)
            expected = torch.log_softmax(logits / 0.7, dim=-1)[
                torch.arange(6), torch.tensor(sample.token_ids)
            ]
            torch.testing.assert_close(torch.tensor(sample.logprobs), expected, atol=1e-5, rtol=1e-5)


def test_samples_share_one_prefill_per_prompt(engine):
    prompt_list = prompts()
    outputs = generate(engine, requests(prompt_list, n=4, temperature=1.0, max_new_tokens=5))
    assert engine.stats["prefill_tokens"] == sum(PROMPT_LENGTHS)
    assert engine.stats["prefill_calls"] == 1
    assert [len(o.samples) for o in outputs] == [4] * len(prompt_list)
    assert engine.stats["generated_tokens"] == 4 * len(prompt_list) * 5
    # Distinct random streams per sample: the 4 samples of a prompt are not all identical.
    assert all(len({tuple(s.token_ids) for s in o.samples}) > 1 for o in outputs)


def test_sampling_is_seeded_and_independent_of_batch_composition(model_dir):
    prompt_list = prompts()
    batch = generate(NativeEngine(str(model_dir), seed=3), requests(prompt_list, n=3, max_new_tokens=6))
    again = generate(NativeEngine(str(model_dir), seed=3), requests(prompt_list, n=3, max_new_tokens=6))
    alone = generate(NativeEngine(str(model_dir), seed=3), requests(prompt_list, n=3, max_new_tokens=6)[1:2])
    other_seed = generate(NativeEngine(str(model_dir), seed=4), requests(prompt_list, n=3, max_new_tokens=6))
    tokens = [[s.token_ids for s in o.samples] for o in batch]
    assert tokens == [[s.token_ids for s in o.samples] for o in again]
    assert tokens[1] == [s.token_ids for s in alone[0].samples]
    assert tokens != [[s.token_ids for s in o.samples] for o in other_seed]


@pytest.mark.parametrize("truncation", [{"top_k": 1}, {"top_p": 1e-6}])
def test_extreme_truncation_equals_greedy(engine, truncation):
    prompt_list = prompts()
    greedy = generate(engine, requests(prompt_list, temperature=0.0, max_new_tokens=6))
    truncated = generate(engine, requests(prompt_list, n=2, temperature=1.5, max_new_tokens=6, **truncation))
    for g, t in zip(greedy, truncated):
        assert [s.token_ids for s in t.samples] == [g.samples[0].token_ids] * 2


def test_stop_token_ends_with_stop_and_keeps_the_token(engine):
    prompt_list = prompts()
    greedy = generate(engine, requests(prompt_list, temperature=0.0, max_new_tokens=8))
    stop_id = greedy[1].samples[0].token_ids[3]
    stopped = generate(
        engine, requests(prompt_list, temperature=0.0, max_new_tokens=8, stop_token_ids=[stop_id])
    )
    for g, s in zip(greedy, stopped):
        full = g.samples[0].token_ids
        sample = s.samples[0]
        if stop_id in full:
            assert sample.token_ids == full[: full.index(stop_id) + 1]
            assert sample.finish_reason == "stop"
        else:
            assert sample.token_ids == full and sample.finish_reason == "length"
    assert stopped[1].samples[0].finish_reason == "stop"


def test_max_new_tokens_per_request(engine):
    reqs = [
        GenerationRequest(request_id=f"r{i}", prompt_ids=p, sampling=SamplingParams(max_new_tokens=m))
        for i, (p, m) in enumerate(zip(prompts(), [1, 4, 7, 2]))
    ]
    outputs = generate(engine, reqs)
    assert [len(o.samples[0].token_ids) for o in outputs] == [1, 4, 7, 2]
    assert all(o.samples[0].finish_reason == "length" for o in outputs)
    assert all(len(o.samples[0].logprobs) == len(o.samples[0].token_ids) for o in outputs)


def test_chunks_respect_max_batch_size(model_dir):
    engine = NativeEngine(str(model_dir), max_batch_size=4)
    outputs = generate(engine, requests(prompts(), n=2, temperature=0.0, max_new_tokens=3))
    assert engine.stats["prefill_calls"] == 2
    assert all(o.samples[0].token_ids == o.samples[1].token_ids for o in outputs)


def test_abort_returns_the_tokens_so_far(engine):
    prompt_list = prompts()[:2]

    async def scenario():
        task = asyncio.create_task(engine.generate(requests(prompt_list, n=2, max_new_tokens=240)))
        while engine.stats["decode_steps"] < 3:
            await asyncio.sleep(0.001)
        await engine.abort(["r0", "unknown"])
        return await task

    outputs = asyncio.run(scenario())
    for sample in outputs[0].samples:
        assert sample.finish_reason == "abort"
        assert 3 <= len(sample.token_ids) < 240
        assert len(sample.logprobs) == len(sample.token_ids)
    assert [s.finish_reason for s in outputs[1].samples] == ["length", "length"]
    assert [len(s.token_ids) for s in outputs[1].samples] == [240, 240]


def test_update_weights_then_logits_equal_the_new_model(engine, tmp_path):
    new_dir = save_tiny_hf_model("qwen2", tmp_path / "new", seed=1)
    asyncio.run(engine.update_weights(iter_safetensors(new_dir)))
    new_hf = AutoModelForCausalLM.from_pretrained(new_dir, dtype=torch.float32).eval()
    input_ids = torch.tensor(prompts([10], seed=5))
    with torch.no_grad():
        torch.testing.assert_close(engine.model(input_ids), new_hf(input_ids).logits, atol=1e-5, rtol=1e-5)
    prompt = prompts([4])[0]
    output = generate(engine, requests([prompt], temperature=0.0, max_new_tokens=5))
    reference = new_hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=5)
    assert output[0].samples[0].token_ids == reference[0, 4:].tolist()


def test_update_weights_rejects_bad_names_and_shapes(engine):
    with pytest.raises(KeyError, match="decoder.layers.0.self_attention.linear_qkv.weight"):
        asyncio.run(
            engine.update_weights([("decoder.layers.0.self_attention.linear_qkv.weight", torch.zeros(1))])
        )
    with pytest.raises(ValueError, match=r"lm_head.weight.*\(64, 64\).*\(128, 64\)"):
        asyncio.run(engine.update_weights([("lm_head.weight", torch.zeros(64, 64))]))


def test_bad_requests_are_clear_errors(engine):
    with pytest.raises(ValueError, match="empty prompt"):
        generate(engine, requests([[]]))
    with pytest.raises(ValueError, match=r"\[500\] outside the vocabulary \[0, 128\)"):
        generate(engine, requests([[1, 500]]))
    with pytest.raises(ValueError, match="'r0' is already in flight"):
        generate(engine, [GenerationRequest(request_id="r0", prompt_ids=[1])] * 2)
    with pytest.raises(ValueError, match="top_k=0"):
        SamplingParams(top_k=0)


def test_sampling_params_from_config():
    cfg = GenerationConfig(
        num_samples=4, temperature=0.6, top_p=0.9, top_k=50, max_new_tokens=32, stop_token_ids=[5], seed=11
    )
    params = sampling_params_from_config(cfg, extra_stop_token_ids=[2, 5])
    assert params == SamplingParams(
        n=4, temperature=0.6, top_p=0.9, top_k=50, max_new_tokens=32, stop_token_ids=(5, 2), seed=11
    )
