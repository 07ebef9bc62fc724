"""The native decoder against transformers: logits parity (llama/qwen2/qwen3, tied, llama3 RoPE,
sharded checkpoints), KV-cache incremental decode, and clear errors for bad weights/configs."""

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from roll.models.native import DecoderConfig, KVCache, load_native_model
from roll.models.tiny import save_tiny_hf_model

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 10000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}
VARIANTS = {
    "llama": ("llama", {}),
    "llama_tied": ("llama", {"tie_word_embeddings": True}),
    "llama3_rope": ("llama", {"rope_parameters": LLAMA3_ROPE}),
    "qwen2": ("qwen2", {}),
    "qwen2_tied": ("qwen2", {"tie_word_embeddings": True}),
    "qwen3": ("qwen3", {}),
    "qwen3_tied": ("qwen3", {"tie_word_embeddings": True}),
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("native_models")
    return {name: save_tiny_hf_model(arch, root / name, **kw) for name, (arch, kw) in VARIANTS.items()}


def hf_logits(model_dir, input_ids: torch.Tensor) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids).logits


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_match_transformers(model_dirs, variant):
    input_ids = torch.randint(0, 128, (3, 40), generator=torch.Generator().manual_seed(1))
    model = load_native_model(model_dirs[variant])
    with torch.no_grad():
        ours = model(input_ids)
    torch.testing.assert_close(ours, hf_logits(model_dirs[variant], input_ids), atol=1e-5, rtol=1e-5)
    if VARIANTS[variant][1].get("tie_word_embeddings"):
        assert model.lm_head.weight is model.model.embed_tokens.weight


def test_sharded_checkpoint_loads(tmp_path):
    source = save_tiny_hf_model("qwen2", tmp_path / "single")
    hf = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    input_ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = load_native_model(tmp_path / "sharded")(input_ids)
    torch.testing.assert_close(ours, hf_logits(source, input_ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["qwen3", "llama_tied"])
def test_kv_cache_incremental_decode_matches_full_forward(model_dirs, variant):
    """Right-padded prompts of different lengths prefilled together, then decoded one token per step
    at per-row positions, give each row's logits of the full unpadded forward (transformers)."""
    gen = torch.Generator().manual_seed(3)
    prompt_lens, steps = [5, 2, 9], 6
    sequences = [torch.randint(0, 128, (n + steps,), generator=gen) for n in prompt_lens]
    model = load_native_model(model_dirs[variant])
    width = max(prompt_lens)
    padded = torch.zeros(len(sequences), width, dtype=torch.long)
    for i, (seq, n) in enumerate(zip(sequences, prompt_lens)):
        padded[i, :n] = seq[:n]
    lengths = torch.tensor(prompt_lens)
    cache = KVCache(model.config, len(sequences), width + steps, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        logits = [model(padded, torch.arange(width).expand(3, width), cache, logits_at=lengths - 1)]
        for step in range(steps - 1):
            positions = lengths + step
            next_ids = torch.stack([seq[n + step] for seq, n in zip(sequences, prompt_lens)])
            logits.append(model(next_ids[:, None], positions[:, None], cache)[:, 0])
    for i, (seq, n) in enumerate(zip(sequences, prompt_lens)):
        reference = hf_logits(model_dirs[variant], seq[None])[0, n - 1 : n - 1 + steps]
        torch.testing.assert_close(torch.stack([step[i] for step in logits]), reference, atol=1e-5, rtol=1e-5)


def test_copy_named_tensors_rejects_unknown_names_and_wrong_shapes(model_dirs):
    model = load_native_model(model_dirs["qwen2"])
    with pytest.raises(KeyError, match="model.layers.9.self_attn.q_proj.weight"):
        model.copy_named_tensors([("model.layers.9.self_attn.q_proj.weight", torch.zeros(64, 64))])
    with pytest.raises(ValueError, match=r"model.norm.weight.*\(32,\).*\(64,\)"):
        model.copy_named_tensors([("model.norm.weight", torch.zeros(32))])


def test_checkpoint_missing_a_weight_is_an_error(model_dirs, tmp_path):
    source = model_dirs["qwen2"]
    tensors = dict(AutoModelForCausalLM.from_pretrained(source).state_dict())
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((source / "config.json").read_text())
    with pytest.raises(ValueError, match="model.layers.1.mlp.up_proj.weight"):
        load_native_model(tmp_path)


def test_unsupported_architecture_is_a_clear_error(model_dirs):
    hf = json.loads((model_dirs["qwen2"] / "config.json").read_text())
    with pytest.raises(ValueError, match="model_type='mixtral'"):
        DecoderConfig.from_hf_dict({**hf, "model_type": "mixtral"})
    with pytest.raises(ValueError, match="rope_type='yarn'"):
        DecoderConfig.from_hf_dict({**hf, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}})
