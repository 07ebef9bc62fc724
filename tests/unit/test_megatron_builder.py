"""HF config.json -> megatron TransformerConfig: per-architecture fields, vocab padding, and the
errors for configs or layouts we cannot build."""

import json

import pytest
import torch

from roll.models.megatron_builder import build_transformer_config, load_hf_config, padded_vocab_size
from roll.models.tiny import tiny_hf_config


def _hf_config(tmp_path, arch: str, **overrides) -> dict:
    tiny_hf_config(arch, **overrides).save_pretrained(tmp_path)
    return load_hf_config(tmp_path)


@pytest.mark.parametrize(
    ("arch", "qkv_bias", "qk_norm"), [("llama", False, False), ("qwen2", True, False), ("qwen3", False, True)]
)
def test_architecture_fields(tmp_path, arch, qkv_bias, qk_norm):
    hf = _hf_config(tmp_path, arch, rms_norm_eps=1e-5)
    config = build_transformer_config(hf, tensor_parallel=2, pipeline_parallel=2, dtype=torch.bfloat16)
    assert (config.add_qkv_bias, config.qk_layernorm) == (qkv_bias, qk_norm)
    assert (config.num_layers, config.hidden_size, config.ffn_hidden_size) == (2, 64, 128)
    assert (config.num_attention_heads, config.num_query_groups, config.kv_channels) == (4, 2, 16)
    assert config.layernorm_epsilon == 1e-5 and config.normalization == "RMSNorm"
    assert config.gated_linear_unit and not config.add_bias_linear
    assert config.bf16 and config.params_dtype == torch.bfloat16
    assert (config.tensor_model_parallel_size, config.pipeline_model_parallel_size) == (2, 2)


@pytest.mark.parametrize(
    ("vocab", "tp", "padded"), [(128, 1, 128), (128, 2, 256), (151936, 4, 152064), (129, 1, 256)]
)
def test_padded_vocab_size(vocab, tp, padded):
    assert padded_vocab_size(vocab, tp) == padded


def test_layouts_that_do_not_divide_the_model(tmp_path):
    hf = _hf_config(tmp_path, "llama")
    with pytest.raises(ValueError, match=r"num_key_value_heads=2 is not divisible by tensor_parallel=4"):
        build_transformer_config(hf, tensor_parallel=4, pipeline_parallel=1)
    with pytest.raises(
        ValueError,
        match=r"num_hidden_layers=2 .* pipeline_parallel\(2\) x virtual_pipeline_parallel\(2\) = 4",
    ):
        build_transformer_config(hf, tensor_parallel=1, pipeline_parallel=2, virtual_pipeline_parallel=2)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"model_type": "mistral"}, r"model_type='mistral' is not supported"),
        ({"hidden_act": "gelu"}, r"hidden_act='gelu'"),
        ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, r"rope_type='yarn' is not supported"),
        (
            {"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 2.0}},
            r"low_freq_factor=2.0 is not supported",
        ),
    ],
)
def test_unsupported_configs_are_named(tmp_path, edit, message):
    tiny_hf_config("llama").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **edit}))
    with pytest.raises(ValueError, match=message):
        load_hf_config(tmp_path)
