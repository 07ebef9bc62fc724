"""`roll convert` (hf-to-mcore / mcore-to-hf) without processes: bit-exact round trips, per-rank
shards checked against a plain-loop reference of Megatron's layout, sharded HF input, shape errors."""

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from roll.models.convert import hf_to_mcore_main, mcore_to_hf_main
from roll.models.tiny import save_tiny_hf_model

TP, PP = 2, 2


def _load_dir(path: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def _round_trip(hf_dir: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    hf_to_mcore_main(argparse.Namespace(hf=str(hf_dir), out=str(tmp_path / "mcore"), tp=TP, pp=PP))
    mcore_to_hf_main(argparse.Namespace(mcore=str(tmp_path / "mcore"), out=str(tmp_path / "back")))
    return _load_dir(tmp_path / "back")


@pytest.mark.parametrize(
    ("arch", "tied"), [("llama", False), ("qwen2", False), ("qwen3", False), ("qwen2", True)]
)
def test_cli_round_trip_is_bit_exact(arch, tied, tmp_path):
    hf_dir = save_tiny_hf_model(arch, tmp_path / "hf", tie_word_embeddings=tied)
    original = load_file(hf_dir / "model.safetensors")
    back = _round_trip(hf_dir, tmp_path)
    assert back.keys() == original.keys()
    for name, tensor in original.items():
        assert torch.equal(back[name], tensor), name
    assert json.loads((tmp_path / "back" / "config.json").read_text()) == json.loads(
        (hf_dir / "config.json").read_text()
    )


def _reference_qkv_rows(q, k, v, tp_rank, groups=2, heads=4, dim=16):
    """Megatron's fused QKV rows of one TP rank: per query group, its q heads, then k, then v."""
    rows = []
    for group in range(groups // TP * tp_rank, groups // TP * (tp_rank + 1)):
        q_per_group = heads // groups
        for head in range(group * q_per_group, (group + 1) * q_per_group):
            rows.append(q[head * dim : (head + 1) * dim])
        rows.append(k[group * dim : (group + 1) * dim])
        rows.append(v[group * dim : (group + 1) * dim])
    return torch.cat(rows)


def test_rank_shards_follow_megatron_layout(tmp_path):
    hf_dir = save_tiny_hf_model("qwen2", tmp_path / "hf")
    hf = load_file(hf_dir / "model.safetensors")
    hf_to_mcore_main(argparse.Namespace(hf=str(hf_dir), out=str(tmp_path / "mcore"), tp=TP, pp=PP))
    for tp_rank in range(TP):
        stage0 = load_file(tmp_path / "mcore" / f"mp_rank_{tp_rank:02d}_000" / "model.safetensors")
        stage1 = load_file(tmp_path / "mcore" / f"mp_rank_{tp_rank:02d}_001" / "model.safetensors")
        for kind in ("weight", "bias"):
            expected = _reference_qkv_rows(
                *(hf[f"model.layers.1.self_attn.{p}_proj.{kind}"] for p in "qkv"), tp_rank
            )
            # PP stage 1 holds HF layer 1 as its local layer 0.
            assert torch.equal(stage1[f"decoder.layers.0.self_attention.linear_qkv.{kind}"], expected)
        ffn_half = 128 // TP
        gate = hf["model.layers.0.mlp.gate_proj.weight"][tp_rank * ffn_half : (tp_rank + 1) * ffn_half]
        up = hf["model.layers.0.mlp.up_proj.weight"][tp_rank * ffn_half : (tp_rank + 1) * ffn_half]
        assert torch.equal(stage0["decoder.layers.0.mlp.linear_fc1.weight"], torch.cat([gate, up]))
        down = hf["model.layers.0.mlp.down_proj.weight"][:, tp_rank * ffn_half : (tp_rank + 1) * ffn_half]
        assert torch.equal(stage0["decoder.layers.0.mlp.linear_fc2.weight"], down)
        # vocab 128 is padded to 128 * TP = 256 rows: rank 0 holds the real rows, rank 1 zeros.
        embedding = stage0["embedding.word_embeddings.weight"]
        expected_rows = hf["model.embed_tokens.weight"] if tp_rank == 0 else torch.zeros(128, 64)
        assert torch.equal(embedding, expected_rows)
        assert "embedding.word_embeddings.weight" not in stage1 and "output_layer.weight" in stage1


def test_sharded_hf_input_with_index(tmp_path):
    hf_dir = save_tiny_hf_model("llama", tmp_path / "hf")
    tensors = load_file(hf_dir / "model.safetensors")
    (hf_dir / "model.safetensors").unlink()
    names = sorted(tensors)
    weight_map = {}
    for part, chunk in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
        file = f"model-{part + 1:05d}-of-00002.safetensors"
        save_file({n: tensors[n] for n in chunk}, hf_dir / file)
        weight_map.update(dict.fromkeys(chunk, file))
    (hf_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    back = _round_trip(hf_dir, tmp_path)
    assert back.keys() == tensors.keys()
    assert all(torch.equal(back[n], tensors[n]) for n in names)


def test_shape_mismatch_names_tensor_and_both_shapes(tmp_path):
    hf_dir = save_tiny_hf_model("llama", tmp_path / "hf")
    config = json.loads((hf_dir / "config.json").read_text())
    config["intermediate_size"] = 96
    (hf_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError,
        match=r"model\.layers\.0\.mlp\.\w+_proj\.weight.*\((128, 64|64, 128)\).*\((96, 64|64, 96)\)",
    ):
        hf_to_mcore_main(argparse.Namespace(hf=str(hf_dir), out=str(tmp_path / "mcore"), tp=1, pp=1))


def test_layout_that_does_not_divide_the_model_is_rejected(tmp_path):
    hf_dir = save_tiny_hf_model("llama", tmp_path / "hf")
    with pytest.raises(ValueError, match=r"--tp 4 .*num_key_value_heads=2"):
        hf_to_mcore_main(argparse.Namespace(hf=str(hf_dir), out=str(tmp_path / "mcore"), tp=4, pp=1))
    with pytest.raises(ValueError, match=r"--pp 3 .*num_hidden_layers=2"):
        hf_to_mcore_main(argparse.Namespace(hf=str(hf_dir), out=str(tmp_path / "mcore"), tp=1, pp=3))
