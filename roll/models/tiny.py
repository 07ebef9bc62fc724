"""Tiny random HF checkpoints (Llama, Qwen2, Qwen3) built from configs: no hub downloads.

Tests and the quickstart use these: `save_tiny_hf_model("qwen2", out_dir)` writes config.json and
model.safetensors of a randomly initialised transformers model that our Megatron and native
models must reproduce.
"""

from pathlib import Path
from typing import Any

import torch

TINY_DEFAULTS: dict[str, Any] = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    tie_word_embeddings=False,
)

ARCHITECTURES = ("llama", "qwen2", "qwen3")


def tiny_hf_config(arch: str, **overrides: Any):
    """A transformers config object of a tiny model of `arch` (llama | qwen2 | qwen3)."""
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config

    classes = {"llama": LlamaConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}
    if arch not in classes:
        raise ValueError(f"arch={arch!r} is not one of {'|'.join(ARCHITECTURES)}")
    kwargs = {**TINY_DEFAULTS, **overrides}
    if arch == "qwen3":
        kwargs.setdefault("head_dim", kwargs["hidden_size"] // kwargs["num_attention_heads"])
    return classes[arch](**kwargs)


def save_tiny_hf_model(arch: str, out_dir: str | Path, seed: int = 0, **overrides: Any) -> Path:
    """Build a random tiny `arch` model in fp32, save it as HF safetensors in `out_dir`, return the path."""
    from transformers import AutoModelForCausalLM

    config = tiny_hf_config(arch, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Random biases/norm weights so parity tests would catch a dropped or misplaced tensor.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    return out
