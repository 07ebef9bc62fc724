"""Native (plain-torch) inference model for CPU rollouts: dense Llama / Qwen2 / Qwen3 with a KV cache."""

from roll.models.native.config import DecoderConfig
from roll.models.native.decoder import KVCache, NativeCausalLM
from roll.models.native.weights import iter_safetensors, load_native_model

__all__ = ["DecoderConfig", "KVCache", "NativeCausalLM", "iter_safetensors", "load_native_model"]
