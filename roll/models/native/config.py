"""Architecture description of the native decoder, read from a Hugging Face `config.json`.

Covers the dense Llama / Qwen2 / Qwen3 family; the differences between them are flags here
(QKV bias, QK-norm, tied embeddings, RoPE variant) rather than separate model classes.
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3")
SUPPORTED_ROPE_TYPES = ("default", "llama3")


@dataclass(kw_only=True, frozen=True)
class DecoderConfig:
    """Shapes and numerics of a dense decoder-only transformer."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_type: str = "default"
    rope_scaling: dict[str, Any] = field(default_factory=dict)
    """Extra RoPE parameters of a non-default `rope_type` (llama3: factor, low/high_freq_factor, ...)."""
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    tie_word_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_attention_heads={self.num_heads} is not a multiple of num_key_value_heads="
                f"{self.num_kv_heads}; grouped-query attention needs whole groups"
            )

    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any]) -> "DecoderConfig":
        """Translate a transformers config dict (llama | qwen2 | qwen3) into a DecoderConfig."""
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"config.json model_type={model_type!r} is not supported by the native decoder; "
                f"use one of {'|'.join(SUPPORTED_MODEL_TYPES)} or the SGLang engine"
            )
        if hf.get("use_sliding_window"):
            raise ValueError(
                "config.json use_sliding_window=true is not supported by the native decoder; "
                "set it to false (full attention) or use the SGLang engine"
            )
        # transformers >= 5 nests RoPE settings in `rope_parameters`; older configs use
        # `rope_theta` + `rope_scaling`.
        rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        rope_theta = float(rope.pop("rope_theta", hf.get("rope_theta", 10000.0)))
        rope_type = rope.pop("rope_type", rope.pop("type", "default"))
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(
                f"config.json rope_type={rope_type!r} is not supported by the native decoder; "
                f"use one of {'|'.join(SUPPORTED_ROPE_TYPES)} or the SGLang engine"
            )
        num_heads = hf["num_attention_heads"]
        attention_bias = bool(hf.get("attention_bias", False))
        return cls(
            model_type=model_type,
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=hf.get("num_key_value_heads") or num_heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // num_heads,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_type=rope_type,
            rope_scaling=rope,
            # Qwen2 always has q/k/v bias and no o bias; Llama/Qwen3 bias all four when asked.
            qkv_bias=model_type == "qwen2" or attention_bias,
            o_bias=model_type != "qwen2" and attention_bias,
            mlp_bias=bool(hf.get("mlp_bias", False)),
            qk_norm=model_type == "qwen3",
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        )

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> "DecoderConfig":
        """Read `model_dir/config.json`."""
        path = Path(model_dir) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; model_dir must be an HF checkpoint directory")
        return cls.from_hf_dict(json.loads(path.read_text()))

    def rope_inv_freq(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(head_dim/2,) float32 inverse frequencies, computed exactly as transformers does."""
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float)
        inv_freq = 1.0 / (self.rope_theta ** (exponents / self.head_dim))
        if self.rope_type == "llama3":
            inv_freq = _llama3_scaled_inv_freq(inv_freq, self.rope_scaling)
        return inv_freq


def _llama3_scaled_inv_freq(inv_freq: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """Llama 3.1 long-context RoPE: slow the low frequencies by `factor`, blend the middle band."""
    factor = params["factor"]
    low_freq_factor = params["low_freq_factor"]
    high_freq_factor = params["high_freq_factor"]
    old_context_len = params["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)
