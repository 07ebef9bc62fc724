"""Plain-torch dense decoder (Llama / Qwen2 / Qwen3) with a per-row KV cache, for CPU rollouts.

Module names mirror transformers' (`model.layers.0.self_attn.q_proj.weight`, ...), so HF
checkpoints and HF-named weight updates load by a name -> parameter copy, no conversion.

Batching layout: every row of a batch carries its own positions. Prompts are right-padded for a
batched prefill; a row's keys/values are written into the cache at that row's positions and a query
at position p attends to cache slots 0..p of its row only. Pad tokens after a short prompt write
garbage slots that the row's first decode steps overwrite before any query can see them, so prompts
of different lengths decode together without left-padding or attention-mask bookkeeping.
"""

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from roll.models.native.config import DecoderConfig


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32, scaled by a learned weight (transformers' numerics)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class KVCache:
    """Keys and values of every layer, (B, H_kv, capacity, head_dim) each, indexed by token position."""

    def __init__(
        self, config: DecoderConfig, batch_size: int, capacity: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        shape = (batch_size, config.num_kv_heads, capacity, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)]
        self.capacity = capacity

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    def write(
        self, layer: int, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_len: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H_kv, T, D) at `positions` (B, T); return the cache's first `kv_len` slots."""
        rows = torch.arange(k.shape[0], device=k.device)[:, None]
        # Mixed advanced indexing puts the (B, T) index dims first: targets are (B, T, H_kv, D).
        self.keys[layer][rows, :, positions] = k.transpose(1, 2)
        self.values[layer][rows, :, positions] = v.transpose(1, 2)
        return self.keys[layer][:, :, :kv_len], self.values[layer][:, :, :kv_len]

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep (and repeat) rows by `index` (B',): shares a prompt's cache across samples, drops finished rows."""
        self.keys = [k.index_select(0, index) for k in self.keys]
        self.values = [v.index_select(0, index) for v in self.values]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    """Grouped-query self-attention with RoPE, optional QKV/O bias and optional per-head QK RMSNorm."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = (
            config.num_heads,
            config.num_kv_heads,
            config.head_dim,
        )
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=config.qkv_bias)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=config.qkv_bias)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=config.qkv_bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=config.o_bias)
        if config.qk_norm:
            self.q_norm: RMSNorm | None = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm: RMSNorm | None = RMSNorm(self.head_dim, config.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache | None,
        layer: int,
    ) -> torch.Tensor:
        batch, seq, _ = x.shape
        q = self.q_proj(x).view(batch, seq, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(batch, seq, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(batch, seq, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        cos, sin = cos[:, None], sin[:, None]
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if cache is None:
            key_positions = positions
        else:
            kv_len = int(positions.max()) + 1
            k, v = cache.write(layer, positions, k, v, kv_len)
            key_positions = torch.arange(kv_len, device=x.device).expand(batch, kv_len)
        # Causal by position, per row: a query sees exactly the keys at or before its own position.
        mask = key_positions[:, None, :] <= positions[:, :, None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, -1))


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache | None,
        layer: int,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, positions, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class DecoderBody(nn.Module):
    """Embedding, the layer stack and the final norm (HF's `model.*` sub-module)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class NativeCausalLM(nn.Module):
    """Decoder-only LM whose parameter names equal the HF checkpoint's."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.model = DecoderBody(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the embedding with the LM head when the config ties them (call again after `to_empty`)."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def rope_cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (B, T, head_dim) for integer `positions` (B, T), in fp32 then cast like transformers."""
        inv_freq = self.config.rope_inv_freq(positions.device)
        freqs = positions[..., None].float() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        logits_at: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits for `input_ids` (B, T) at `positions` (B, T; default arange).

        With `cache`, keys/values are stored at `positions` and attention reads the cache. With
        `logits_at` (B,) only the hidden state at that index of each row goes through the LM head
        (returns (B, V) instead of (B, T, V)): prefill needs just each prompt's last token.
        """
        if positions is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        x = self.model.embed_tokens(input_ids)
        cos, sin = self.rope_cos_sin(positions, x.dtype)
        for index, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, positions, cache, index)
        if logits_at is not None:
            x = x[torch.arange(x.shape[0], device=x.device), logits_at]
        return self.lm_head(self.model.norm(x))

    def param_by_hf_name(self) -> dict[str, nn.Parameter]:
        """Every parameter under each of its HF names (a tied LM head appears as `lm_head.weight` too)."""
        return dict(self.named_parameters(remove_duplicate=False))

    @torch.no_grad()
    def copy_named_tensors(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Copy HF-named tensors into the matching parameters; return the names copied.

        Each tensor is checked (known name, equal shape) before its copy; the dtype and device are
        converted. A bad entry raises after the entries before it were copied.
        """
        params = self.param_by_hf_name()
        copied = set()
        for name, tensor in named_tensors:
            if name.endswith("rotary_emb.inv_freq"):
                continue  # old checkpoints store the RoPE table; we recompute it from the config
            param = params.get(name)
            if param is None:
                raise KeyError(
                    f"weight {name!r} is not a parameter of the native {self.config.model_type} decoder "
                    f"(expected HF names like 'model.layers.0.self_attn.q_proj.weight'); "
                    f"check the architecture and the name conversion"
                )
            if tuple(tensor.shape) != tuple(param.shape):
                raise ValueError(
                    f"weight {name!r} has shape {tuple(tensor.shape)} but the native decoder expects "
                    f"{tuple(param.shape)}; the checkpoint and config.json disagree (or a TP shard was sent)"
                )
            param.copy_(tensor)
            copied.add(name)
        return copied
