"""SGLangEngine on a CUDA GPU against transformers (skipped without CUDA or without sglang installed).

A tiny random Qwen2 (roll.models.tiny) is served by SGLang with the torch-native attention and
sampling backends (any head size, fp32 and bf16). Checked against an independent reference, the HF
model: greedy tokens equal `generate` (fp32), per-token log-probs equal a full-vocabulary
`log_softmax(logits / T)` of the HF logits even under top-k/top-p (our convention, engine.py), stop
tokens end and stay in the response, `update_weights` with HF names switches the served model, and
`abort` returns rows early with aligned log-probs.

Run: pytest tests/gpu/test_sglang_engine.py  (needs `pip install 'roll-rl[sglang]'` on the GPU machine).
"""

import asyncio

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
pytest.importorskip("sglang", reason="sglang is not installed; pip install 'roll-rl[sglang]'")

from transformers import AutoModelForCausalLM  # noqa: E402

from roll.config.worker import StrategyConfig, WorkerConfig  # noqa: E402
from roll.models.tiny import save_tiny_hf_model  # noqa: E402
from roll.strategies.engine import GenerationRequest, SamplingParams  # noqa: E402
from roll.strategies.sglang_engine import SGLangEngine  # noqa: E402

pytestmark = pytest.mark.gpu

ARGS = {
    "mem_fraction_static": 0.15,
    "attention_backend": "torch_native",
    "sampling_backend": "pytorch",
    "disable_cuda_graph": True,
    "log_level": "warning",
}
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LOGPROB_ATOL = {"fp32": 2e-3, "bf16": 6e-2}
PROMPTS = [[1, 2, 3, 4, 5], [7, 7, 7, 9, 11], list(range(20, 40))]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """Two tiny random Qwen2 checkpoints (seeds 0 and 1) with the same shapes."""
    return [
        save_tiny_hf_model("qwen2", tmp_path_factory.mktemp(f"qwen2_{seed}"), seed=seed) for seed in (0, 1)
    ]


@pytest.fixture(scope="module", params=["fp32", "bf16"])
def served(request, model_dirs):
    """(dtype, engine, run) with `run(coro)` driving every call on one event loop, as the actor does."""
    dtype = request.param
    cfg = WorkerConfig(
        model_path=str(model_dirs[0]), strategy=StrategyConfig(name="sglang", args=ARGS), dtype=dtype
    )
    engine = SGLangEngine(cfg, seed=0)
    loop = asyncio.new_event_loop()
    yield dtype, engine, loop.run_until_complete
    engine.shutdown()
    loop.close()


def _hf(model_dir, dtype):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=TORCH_DTYPES[dtype]).cuda().eval()


@torch.no_grad()
def _hf_logprobs(model, prompt, response, temperature, top_k=None):
    """Full-vocabulary log_softmax(logits / T) of the HF model at each response token; with top_k, the
    top-k-truncated, renormalised log-probs instead (the convention we do NOT return)."""
    ids = torch.tensor([prompt + response], device="cuda")
    logits = model(ids).logits[0, len(prompt) - 1 : -1].float() / temperature
    if top_k is not None:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    target = torch.tensor(response, device="cuda")[:, None]
    return torch.log_softmax(logits, dim=-1).gather(1, target).squeeze(1).cpu()


def _requests(prefix, sampling):
    return [
        GenerationRequest(request_id=f"{prefix}{i}", prompt_ids=p, sampling=sampling)
        for i, p in enumerate(PROMPTS)
    ]


@torch.no_grad()
def _hf_greedy(model, prompt, max_new_tokens):
    out = model.generate(
        torch.tensor([prompt], device="cuda"), do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=0
    )
    return out[0, len(prompt) :].tolist()


def test_greedy_tokens_and_logprobs_match_transformers(served, model_dirs):
    dtype, engine, run = served
    hf = _hf(model_dirs[0], dtype)
    outputs = run(engine.generate(_requests("g", SamplingParams(n=2, temperature=0.0, max_new_tokens=12))))
    for prompt, output in zip(PROMPTS, outputs):
        assert output.prompt_ids == prompt and len(output.samples) == 2
        reference = _hf_greedy(hf, prompt, 12)
        for sample in output.samples:
            assert sample.finish_reason == "length" and len(sample.token_ids) == 12
            if dtype == "fp32":  # bf16 near-ties may flip an argmax between kernels
                assert sample.token_ids == reference
            expected = _hf_logprobs(hf, prompt, sample.token_ids, temperature=1.0)  # greedy: unscaled
            torch.testing.assert_close(
                torch.tensor(sample.logprobs), expected, atol=LOGPROB_ATOL[dtype], rtol=0
            )


def test_sampled_logprobs_are_full_vocab_log_softmax_at_the_temperature(served, model_dirs):
    dtype, engine, run = served
    hf = _hf(model_dirs[0], dtype)
    sampling = SamplingParams(n=4, temperature=0.7, top_k=8, top_p=0.9, max_new_tokens=16)
    outputs = run(engine.generate(_requests("s", sampling)))
    gaps = []
    for prompt, output in zip(PROMPTS, outputs):
        for sample in output.samples:
            assert len(sample.logprobs) == len(sample.token_ids) == 16
            expected = _hf_logprobs(hf, prompt, sample.token_ids, temperature=0.7)
            torch.testing.assert_close(
                torch.tensor(sample.logprobs), expected, atol=LOGPROB_ATOL[dtype], rtol=0
            )
            truncated = _hf_logprobs(hf, prompt, sample.token_ids, temperature=0.7, top_k=8)
            gaps.append((truncated - expected).abs().max().item())
    # The truncated, renormalised log-probs are far away: the check tells the two conventions apart.
    assert min(gaps) > 10 * LOGPROB_ATOL[dtype]


def test_stop_token_ends_the_response_and_is_kept(served, model_dirs):
    dtype, engine, run = served
    if dtype != "fp32":
        pytest.skip("needs token-exact greedy parity (fp32)")
    reference = _hf_greedy(_hf(model_dirs[0], dtype), PROMPTS[0], 12)
    stop = reference[4]
    cut = reference.index(stop) + 1
    sampling = SamplingParams(temperature=0.0, max_new_tokens=12, stop_token_ids=(stop,))
    (output,) = run(
        engine.generate([GenerationRequest(request_id="stop", prompt_ids=PROMPTS[0], sampling=sampling)])
    )
    (sample,) = output.samples
    assert sample.finish_reason == "stop"
    assert sample.token_ids == reference[:cut] and sample.token_ids[-1] == stop
    assert len(sample.logprobs) == cut


def test_abort_returns_rows_early_with_aligned_logprobs(served):
    _, engine, run = served

    async def generate_then_abort():
        sampling = SamplingParams(n=8, temperature=1.0, max_new_tokens=240)
        task = asyncio.ensure_future(
            engine.generate([GenerationRequest(request_id="long", prompt_ids=[1, 2, 3], sampling=sampling)])
        )
        await asyncio.sleep(0.05)
        await engine.abort(["long"])
        return await task

    (output,) = run(generate_then_abort())
    reasons = [s.finish_reason for s in output.samples]
    assert set(reasons) <= {"abort", "length"} and "abort" in reasons
    for sample in output.samples:
        assert len(sample.logprobs) == len(sample.token_ids)
        if sample.finish_reason == "abort":
            assert len(sample.token_ids) < 240


def test_update_weights_with_hf_names_switches_the_served_model(served, model_dirs):
    dtype, engine, run = served
    if dtype != "fp32":
        pytest.skip("needs token-exact greedy parity (fp32)")
    sampling = SamplingParams(temperature=0.0, max_new_tokens=12)
    request = [GenerationRequest(request_id="w", prompt_ids=PROMPTS[2], sampling=sampling)]
    try:
        for model_dir in (model_dirs[1], model_dirs[0]):  # switch, then switch back for other tests
            hf = _hf(model_dir, dtype)
            run(engine.update_weights([(n, t.detach().clone()) for n, t in hf.state_dict().items()]))
            (output,) = run(engine.generate(request))
            assert output.samples[0].token_ids == _hf_greedy(hf, PROMPTS[2], 12)
    finally:
        hf = _hf(model_dirs[0], dtype)
        run(engine.update_weights([(n, t.detach().clone()) for n, t in hf.state_dict().items()]))
