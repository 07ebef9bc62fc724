"""HF <-> Megatron parameter mapping and TP (un)sharding: pure tensor functions, no I/O, no comms.

Each Megatron parameter of a GPTModel chunk maps to one or more HF tensors and a sharding kind:

  replicated  norms, the critic's value head             same tensor on every TP rank
  row         o_proj, down_proj                          split along dim 1
  vocab       embed_tokens, lm_head                      rows padded to the padded vocab, split dim 0
  qkv         q/k/v_proj (+ biases) -> linear_qkv        interleaved per query group, split dim 0
  fc1         gate_proj, up_proj -> linear_fc1           each split dim 0, rank slice = [gate_r; up_r]

Megatron names use the chunk-local layer index (`decoder.layers.{i}`); `layer_to_hf` maps it to the
HF layer. Both local-spec and Transformer-Engine names (fused `layer_norm_weight`) are understood.
"""

import re
from dataclasses import dataclass
from typing import Any

import torch

from roll.models.megatron_builder import has_qkv_bias, head_dim, padded_vocab_size

VALUE_HEAD_HF_NAME = "score.weight"

_LAYER_PARAMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "input_layernorm.weight": ("replicated", ("input_layernorm.weight",)),
    "self_attention.linear_qkv.layer_norm_weight": ("replicated", ("input_layernorm.weight",)),
    "self_attention.linear_qkv.weight": (
        "qkv",
        ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    ),
    "self_attention.linear_qkv.bias": (
        "qkv",
        ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
    ),
    "self_attention.q_layernorm.weight": ("replicated", ("self_attn.q_norm.weight",)),
    "self_attention.k_layernorm.weight": ("replicated", ("self_attn.k_norm.weight",)),
    "self_attention.linear_proj.weight": ("row", ("self_attn.o_proj.weight",)),
    "pre_mlp_layernorm.weight": ("replicated", ("post_attention_layernorm.weight",)),
    "mlp.linear_fc1.layer_norm_weight": ("replicated", ("post_attention_layernorm.weight",)),
    "mlp.linear_fc1.weight": ("fc1", ("mlp.gate_proj.weight", "mlp.up_proj.weight")),
    "mlp.linear_fc2.weight": ("row", ("mlp.down_proj.weight",)),
}
_LAYER_NAME = re.compile(r"decoder\.layers\.(\d+)\.(.+)")


@dataclass(frozen=True)
class ParamMapping:
    """One Megatron parameter: its HF source tensors and how it is sharded over TP."""

    mcore_name: str
    hf_names: tuple[str, ...]
    kind: str


def map_param(
    mcore_name: str, hf_config: dict[str, Any], layer_to_hf: dict[int, int], is_critic: bool = False
) -> ParamMapping:
    """The mapping of Megatron parameter `mcore_name` of a chunk whose local layers map by `layer_to_hf`."""
    tied = bool(hf_config.get("tie_word_embeddings"))
    if mcore_name == "embedding.word_embeddings.weight":
        return ParamMapping(mcore_name, ("model.embed_tokens.weight",), "vocab")
    if mcore_name == "decoder.final_layernorm.weight":
        return ParamMapping(mcore_name, ("model.norm.weight",), "replicated")
    if mcore_name == "output_layer.weight":
        if is_critic:
            return ParamMapping(mcore_name, (VALUE_HEAD_HF_NAME,), "replicated")
        return ParamMapping(mcore_name, ("model.embed_tokens.weight" if tied else "lm_head.weight",), "vocab")
    match = _LAYER_NAME.fullmatch(mcore_name)
    if match and match.group(2) in _LAYER_PARAMS:
        kind, suffixes = _LAYER_PARAMS[match.group(2)]
        prefix = f"model.layers.{layer_to_hf[int(match.group(1))]}."
        return ParamMapping(mcore_name, tuple(prefix + s for s in suffixes), kind)
    raise ValueError(
        f"megatron parameter {mcore_name!r} has no HF mapping for model_type={hf_config['model_type']!r}; "
        "add it to roll/models/weight_mapping.py"
    )


def expected_hf_shapes(hf_config: dict[str, Any], is_critic: bool = False) -> dict[str, tuple[int, ...]]:
    """Every HF tensor name of the model and the shape its config implies."""
    hidden, ffn, vocab = hf_config["hidden_size"], hf_config["intermediate_size"], hf_config["vocab_size"]
    heads = hf_config["num_attention_heads"]
    groups = hf_config.get("num_key_value_heads") or heads
    dim = head_dim(hf_config)
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (vocab, hidden),
        "model.norm.weight": (hidden,),
    }
    if is_critic:
        shapes[VALUE_HEAD_HF_NAME] = (1, hidden)
    elif not hf_config.get("tie_word_embeddings"):
        shapes["lm_head.weight"] = (vocab, hidden)
    for layer in range(hf_config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        shapes.update(
            {
                p + "input_layernorm.weight": (hidden,),
                p + "post_attention_layernorm.weight": (hidden,),
                p + "self_attn.q_proj.weight": (heads * dim, hidden),
                p + "self_attn.k_proj.weight": (groups * dim, hidden),
                p + "self_attn.v_proj.weight": (groups * dim, hidden),
                p + "self_attn.o_proj.weight": (hidden, heads * dim),
                p + "mlp.gate_proj.weight": (ffn, hidden),
                p + "mlp.up_proj.weight": (ffn, hidden),
                p + "mlp.down_proj.weight": (hidden, ffn),
            }
        )
        if has_qkv_bias(hf_config):
            shapes[p + "self_attn.q_proj.bias"] = (heads * dim,)
            shapes[p + "self_attn.k_proj.bias"] = (groups * dim,)
            shapes[p + "self_attn.v_proj.bias"] = (groups * dim,)
        if hf_config["model_type"] == "qwen3":
            shapes[p + "self_attn.q_norm.weight"] = (dim,)
            shapes[p + "self_attn.k_norm.weight"] = (dim,)
    return shapes


def _groups(hf_config: dict[str, Any]) -> tuple[int, int, int]:
    heads = hf_config["num_attention_heads"]
    groups = hf_config.get("num_key_value_heads") or heads
    return heads // groups, groups, head_dim(hf_config)


def shard_for_rank(
    mapping: ParamMapping, hf_tensors: list[torch.Tensor], hf_config: dict[str, Any], tp: int, tp_rank: int
) -> torch.Tensor:
    """The TP-rank slice of the Megatron parameter built from its HF tensors (in `hf_names` order)."""
    kind = mapping.kind
    if kind == "replicated":
        return hf_tensors[0]
    if kind == "row":
        return hf_tensors[0].chunk(tp, dim=1)[tp_rank]
    if kind == "vocab":
        full = hf_tensors[0]
        padding = padded_vocab_size(full.shape[0], tp) - full.shape[0]
        full = torch.cat([full, full.new_zeros(padding, *full.shape[1:])]) if padding else full
        return full.chunk(tp, dim=0)[tp_rank]
    if kind == "fc1":
        gate, up = (t.chunk(tp, dim=0)[tp_rank] for t in hf_tensors)
        return torch.cat([gate, up])
    if kind == "qkv":
        q_per_group, groups, dim = _groups(hf_config)
        q, k, v = hf_tensors
        rest = q.shape[1:]
        interleaved = torch.cat(
            [
                q.reshape(groups, q_per_group * dim, *rest),
                k.reshape(groups, dim, *rest),
                v.reshape(groups, dim, *rest),
            ],
            dim=1,
        ).reshape(-1, *rest)
        return interleaved.chunk(tp, dim=0)[tp_rank]
    raise AssertionError(f"unknown sharding kind {kind!r}")


def merge_shards(
    mapping: ParamMapping, shards: list[torch.Tensor], hf_config: dict[str, Any]
) -> list[torch.Tensor]:
    """Inverse of `shard_for_rank`: the HF tensors (in `hf_names` order) from all TP ranks' slices."""
    kind = mapping.kind
    if kind == "replicated":
        return [shards[0]]
    if kind == "row":
        return [torch.cat(shards, dim=1)]
    if kind == "vocab":
        return [torch.cat(shards, dim=0)[: hf_config["vocab_size"]]]
    if kind == "fc1":
        halves = [shard.chunk(2, dim=0) for shard in shards]
        return [torch.cat([h[0] for h in halves]), torch.cat([h[1] for h in halves])]
    if kind == "qkv":
        q_per_group, groups, dim = _groups(hf_config)
        full = torch.cat(shards, dim=0)
        rest = full.shape[1:]
        q, k, v = full.reshape(groups, (q_per_group + 2) * dim, *rest).split(
            [q_per_group * dim, dim, dim], dim=1
        )
        return [t.reshape(-1, *rest) for t in (q, k, v)]
    raise AssertionError(f"unknown sharding kind {kind!r}")


def mcore_param_names(hf_config: dict[str, Any], pp: int, pp_rank: int, is_critic: bool = False) -> list[str]:
    """Local-spec parameter names of PP stage `pp_rank` (no VPP), as built by roll.models.megatron_builder."""
    layers = hf_config["num_hidden_layers"] // pp
    names = ["embedding.word_embeddings.weight"] if pp_rank == 0 else []
    layer_names = [
        "input_layernorm.weight",
        "self_attention.linear_qkv.weight",
        "self_attention.linear_proj.weight",
        "pre_mlp_layernorm.weight",
        "mlp.linear_fc1.weight",
        "mlp.linear_fc2.weight",
    ]
    if has_qkv_bias(hf_config):
        layer_names.append("self_attention.linear_qkv.bias")
    if hf_config["model_type"] == "qwen3":
        layer_names += ["self_attention.q_layernorm.weight", "self_attention.k_layernorm.weight"]
    names += [f"decoder.layers.{i}.{n}" for i in range(layers) for n in layer_names]
    if pp_rank == pp - 1:
        names.append("decoder.final_layernorm.weight")
        # A tied model on one stage uses the embedding as output layer; with PP the last stage keeps a copy.
        if is_critic or not hf_config.get("tie_word_embeddings") or pp > 1:
            names.append("output_layer.weight")
    return names
