"""Megatron `GPTModel` builders for HF decoder-only models: Llama, Qwen2 (QKV bias), Qwen3 (QK-norm).

    hf_config = load_hf_config(model_dir)
    config = build_transformer_config(hf_config, tensor_parallel=2, pipeline_parallel=1)
    chunks = build_model_chunks(hf_config, config)          # this rank's PP stage / VPP chunks

The HF `config.json` fixes the architecture (GQA, RoPE theta, RMSNorm eps, tied embeddings, SwiGLU);
the TransformerConfig adds the parallel layout. Layer specs: Transformer-Engine on GPUs when TE is
importable, else megatron's local spec with an RMSNorm that supports sequence parallelism.

The vocabulary is padded to a multiple of `VOCAB_DIVISIBLE_BY * tensor_parallel` as in Megatron-LM;
logit columns >= `hf_config["vocab_size"]` are padding and must be masked out by consumers.
A critic is the same backbone with a scalar value head (roll/models/value_head.py).
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F

from roll.platform import get_device_type

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3")
VOCAB_DIVISIBLE_BY = 128


def load_hf_config(model_dir: str | Path) -> dict[str, Any]:
    """Read `model_dir/config.json` and check that its architecture is one we can build."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; model_path must be an HF model directory")
    hf_config = json.loads(path.read_text())
    model_type = hf_config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"{path}: model_type={model_type!r} is not supported; supported: {'|'.join(SUPPORTED_MODEL_TYPES)}"
        )
    if hf_config.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{path}: hidden_act={hf_config['hidden_act']!r}; only silu (SwiGLU) is supported")
    for flag in ("mlp_bias", "use_sliding_window"):
        if hf_config.get(flag):
            raise ValueError(f"{path}: {flag}=true is not supported; use a checkpoint with {flag}=false")
    if model_type == "llama" and hf_config.get("attention_bias"):
        raise ValueError(f"{path}: attention_bias=true (o_proj bias) is not supported for llama")
    _rope_scaling(hf_config)
    return hf_config


def rope_theta(hf_config: dict[str, Any]) -> float:
    """RoPE base from either the transformers<5 (`rope_theta`) or >=5 (`rope_parameters`) layout."""
    params = hf_config.get("rope_parameters") or {}
    return float(params.get("rope_theta", hf_config.get("rope_theta", 10000.0)))


def _rope_scaling(hf_config: dict[str, Any]) -> Optional[float]:
    """Llama-3 RoPE scaling factor, or None for plain RoPE."""
    params = hf_config.get("rope_scaling") or hf_config.get("rope_parameters") or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        return None
    if rope_type != "llama3":
        raise ValueError(f"rope_type={rope_type!r} is not supported; supported: default|llama3")
    # megatron-core applies Llama-3 scaling with these three constants fixed; only `factor` varies.
    fixed = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    for key, value in fixed.items():
        if float(params.get(key, value)) != value:
            raise ValueError(
                f"llama3 rope scaling with {key}={params[key]} is not supported; megatron needs {value}"
            )
    return float(params["factor"])


def has_qkv_bias(hf_config: dict[str, Any]) -> bool:
    """Qwen2 always has q/k/v biases; others only with attention_bias=true."""
    return hf_config["model_type"] == "qwen2" or bool(hf_config.get("attention_bias", False))


def head_dim(hf_config: dict[str, Any]) -> int:
    return hf_config.get("head_dim") or hf_config["hidden_size"] // hf_config["num_attention_heads"]


def padded_vocab_size(vocab_size: int, tensor_parallel: int, divisible_by: int = VOCAB_DIVISIBLE_BY) -> int:
    """Vocab rounded up so that every TP rank holds an equal, aligned slice (Megatron-LM rule)."""
    multiple = divisible_by * tensor_parallel
    return -(-vocab_size // multiple) * multiple


def build_transformer_config(
    hf_config: dict[str, Any],
    *,
    tensor_parallel: int,
    pipeline_parallel: int,
    virtual_pipeline_parallel: Optional[int] = None,
    sequence_parallel: bool = False,
    dtype: torch.dtype = torch.float32,
    recompute: bool = False,
):
    """The megatron TransformerConfig of `hf_config` under the given parallel layout."""
    from megatron.core.transformer import TransformerConfig

    num_layers = hf_config["num_hidden_layers"]
    stages = pipeline_parallel * (virtual_pipeline_parallel or 1)
    if num_layers % stages:
        raise ValueError(
            f"num_hidden_layers={num_layers} is not divisible by pipeline_parallel({pipeline_parallel}) x "
            f"virtual_pipeline_parallel({virtual_pipeline_parallel or 1}) = {stages}; change the PP/VPP sizes"
        )
    heads, groups = hf_config["num_attention_heads"], hf_config.get("num_key_value_heads")
    groups = groups or heads
    if groups % tensor_parallel:
        raise ValueError(
            f"num_key_value_heads={groups} is not divisible by tensor_parallel={tensor_parallel}; "
            "choose a tensor_parallel that divides the number of KV heads"
        )
    on_gpu = get_device_type() == "cuda"
    # Fused kernels need CUDA (and TE for RoPE); gradient-accumulation fusion stays off because it
    # needs megatron DDP's main_grad buffers, which a frozen (reference) model does not have.
    fused = on_gpu and _has_transformer_engine()
    recompute_kwargs = (
        dict(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
        if recompute
        else {}
    )
    return TransformerConfig(
        num_layers=num_layers,
        hidden_size=hf_config["hidden_size"],
        ffn_hidden_size=hf_config["intermediate_size"],
        num_attention_heads=heads,
        num_query_groups=groups,
        kv_channels=head_dim(hf_config),
        normalization="RMSNorm",
        layernorm_epsilon=hf_config.get("rms_norm_eps", 1e-6),
        add_bias_linear=False,
        add_qkv_bias=has_qkv_bias(hf_config),
        qk_layernorm=hf_config["model_type"] == "qwen3",
        gated_linear_unit=True,
        activation_func=F.silu,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=hf_config.get("initializer_range", 0.02),
        attention_softmax_in_fp32=True,
        bias_activation_fusion=fused,
        bias_dropout_fusion=fused,
        masked_softmax_fusion=fused,
        apply_rope_fusion=fused,
        persist_layer_norm=False,
        gradient_accumulation_fusion=False,
        tensor_model_parallel_size=tensor_parallel,
        pipeline_model_parallel_size=pipeline_parallel,
        virtual_pipeline_model_parallel_size=virtual_pipeline_parallel,
        sequence_parallel=sequence_parallel,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu_initialization=not on_gpu,
        **recompute_kwargs,
    )


def _has_transformer_engine() -> bool:
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        return False
    return True


def build_layer_spec(transformer_config, vp_stage: Optional[int] = None):
    """TE layer spec on GPUs with TE, else the local spec with `SequenceParallelRMSNorm` everywhere."""
    from megatron.core.models.gpt.gpt_layer_specs import (
        get_gpt_layer_local_spec,
        get_gpt_layer_with_transformer_engine_spec,
    )
    from megatron.core.transformer.transformer_block import (
        TransformerBlockSubmodules,
        get_num_layers_to_build,
    )

    qk_norm = transformer_config.qk_layernorm
    if get_device_type() == "cuda" and _has_transformer_engine():
        return get_gpt_layer_with_transformer_engine_spec(qk_layernorm=qk_norm)
    layer = get_gpt_layer_local_spec(qk_layernorm=qk_norm, normalization="RMSNorm")
    layer.submodules.input_layernorm = SequenceParallelRMSNorm
    layer.submodules.pre_mlp_layernorm = SequenceParallelRMSNorm
    if qk_norm:
        layer.submodules.self_attention.submodules.q_layernorm = SequenceParallelRMSNorm
        layer.submodules.self_attention.submodules.k_layernorm = SequenceParallelRMSNorm
    num_layers = get_num_layers_to_build(transformer_config, vp_stage=vp_stage)
    return TransformerBlockSubmodules(layer_specs=[layer] * num_layers, layer_norm=SequenceParallelRMSNorm)


class SequenceParallelRMSNorm(torch.nn.RMSNorm):
    """torch RMSNorm built from a megatron config; usable with sequence parallelism.

    Megatron's `WrappedTorchNorm` refuses sequence parallelism. Under SP each TP rank normalises its
    own sequence slice, so the weight grads are partial sums: the `sequence_parallel` attribute makes
    megatron's `finalize_model_grads` all-reduce them over the TP group.
    """

    def __init__(self, config, hidden_size: int, eps: float = 1e-6, **unused: Any) -> None:
        super().__init__(hidden_size, eps=eps, dtype=config.params_dtype)
        self.weight.sequence_parallel = config.sequence_parallel  # type: ignore[attr-defined]


def build_model(
    hf_config: dict[str, Any],
    transformer_config,
    *,
    is_critic: bool = False,
    pre_process: Optional[bool] = None,
    post_process: Optional[bool] = None,
    vp_stage: Optional[int] = None,
):
    """One GPTModel chunk of this rank (parallel_state must be initialised).

    `pre_process`/`post_process` default to whether this (virtual) stage is the first/last one. The
    actor's forward returns (b, s, padded_vocab / tp) logits on the last stage; the critic's returns
    (b, s) values (see GPTCriticModel).
    """
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    from roll.models.value_head import GPTCriticModel

    vpp = parallel_state.get_virtual_pipeline_model_parallel_world_size()
    stage = vp_stage if vpp is not None else None
    if pre_process is None:
        pre_process = parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=stage)
    if post_process is None:
        post_process = parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=stage)
    scaling = _rope_scaling(hf_config)
    model_cls = GPTCriticModel if is_critic else GPTModel
    return model_cls(
        config=transformer_config,
        transformer_layer_spec=build_layer_spec(transformer_config, vp_stage=stage),
        vocab_size=padded_vocab_size(hf_config["vocab_size"], transformer_config.tensor_model_parallel_size),
        max_sequence_length=hf_config.get("max_position_embeddings", 4096),
        pre_process=pre_process,
        post_process=post_process,
        parallel_output=True,
        share_embeddings_and_output_weights=bool(hf_config.get("tie_word_embeddings")) and not is_critic,
        position_embedding_type="rope",
        rotary_base=rope_theta(hf_config),
        rope_scaling=scaling is not None,
        rope_scaling_factor=scaling or 8.0,
        vp_stage=stage,
    )


def make_model_provider(
    hf_config: dict[str, Any], transformer_config, *, is_critic: bool = False
) -> Callable[..., torch.nn.Module]:
    """A megatron-style `model_provider(pre_process, post_process, vp_stage=None)` for `get_model` wrappers."""

    def model_provider(pre_process: bool = True, post_process: bool = True, vp_stage: Optional[int] = None):
        return build_model(
            hf_config,
            transformer_config,
            is_critic=is_critic,
            pre_process=pre_process,
            post_process=post_process,
            vp_stage=vp_stage,
        )

    return model_provider


def build_model_chunks(
    hf_config: dict[str, Any], transformer_config, *, is_critic: bool = False
) -> list[torch.nn.Module]:
    """All model chunks of this rank: one per virtual pipeline stage (one without VPP), on its device."""
    from megatron.core import parallel_state

    from roll.platform import current_device

    vpp = parallel_state.get_virtual_pipeline_model_parallel_world_size()
    chunks = [
        build_model(hf_config, transformer_config, is_critic=is_critic, vp_stage=stage)
        for stage in range(vpp or 1)
    ]
    return [chunk.to(current_device()) for chunk in chunks]
