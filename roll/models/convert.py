"""HF <-> Megatron weight conversion for live (sharded) models and the `roll convert` commands.

Live models (parallel_state initialised, every rank calls):
    load_hf_into_megatron(chunks, hf_dir, hf_config)     this rank's TP/PP/VPP shards from HF safetensors
    load_mcore_into_megatron(chunks, mcore_dir)          this rank's file written by hf-to-mcore
    iter_megatron_as_hf(chunks, hf_config)               full HF tensors of this PP stage (TP collective)
    save_hf_checkpoint(chunks, hf_config, out_dir)       HF safetensors + config.json, all stages merged

Offline (one process, no process group):
    roll convert hf-to-mcore --hf DIR --out DIR --tp N --pp N     -> hf_to_mcore_main(args)
    roll convert mcore-to-hf --mcore DIR --out DIR                -> mcore_to_hf_main(args)
Both directions only slice and concatenate, so HF -> mcore -> HF is bit-exact.
"""

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file

from roll.models.checkpoint_io import (
    HFCheckpointReader,
    copy_hf_side_files,
    mcore_rank_file,
    read_mcore_manifest,
    write_hf_index,
    write_hf_shard,
    write_mcore_manifest,
)
from roll.models.megatron_builder import load_hf_config
from roll.models.weight_mapping import (
    VALUE_HEAD_HF_NAME,
    ParamMapping,
    expected_hf_shapes,
    map_param,
    mcore_param_names,
    merge_shards,
    shard_for_rank,
)
from roll.utils.logging import get_logger

logger = get_logger(__name__)


def unwrap_model(chunk: torch.nn.Module) -> torch.nn.Module:
    """The GPTModel inside DDP / Float16Module wrappers."""
    while hasattr(chunk, "module"):
        chunk = cast(torch.nn.Module, chunk.module)
    return chunk


def _is_critic(model: torch.nn.Module) -> bool:
    from roll.models.value_head import GPTCriticModel

    return isinstance(model, GPTCriticModel)


def _chunk_mappings(model: torch.nn.Module, hf_config: dict[str, Any]) -> Iterator[tuple[ParamMapping, Any]]:
    """(mapping, parameter) for every parameter of one unwrapped GPTModel chunk."""
    decoder: Any = model.decoder  # megatron's TransformerBlock; torch types Module attributes loosely
    layer_to_hf = {i: layer.layer_number - 1 for i, layer in enumerate(decoder.layers)}
    critic = _is_critic(model)
    for name, param in model.named_parameters():
        yield map_param(name, hf_config, layer_to_hf, is_critic=critic), param


def load_hf_into_megatron(
    model_chunks: list[torch.nn.Module], hf_dir: str | Path, hf_config: dict[str, Any]
) -> None:
    """Copy this rank's shards of the HF checkpoint in `hf_dir` into `model_chunks` (in place).

    A critic built from a causal-LM checkpoint keeps its zero value head when `score.weight` is absent.
    Call before building the optimizer: megatron's fp32 main params are copies made at that point.
    """
    from megatron.core import parallel_state

    tp = parallel_state.get_tensor_model_parallel_world_size()
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    reader = HFCheckpointReader(hf_dir)
    for chunk in model_chunks:
        model = unwrap_model(chunk)
        shapes = expected_hf_shapes(hf_config, is_critic=_is_critic(model))
        for mapping, param in _chunk_mappings(model, hf_config):
            if mapping.hf_names == (VALUE_HEAD_HF_NAME,) and VALUE_HEAD_HF_NAME not in reader:
                continue
            hf_tensors = [reader.get(name, shapes[name]) for name in mapping.hf_names]
            shard = shard_for_rank(mapping, hf_tensors, hf_config, tp, tp_rank)
            assert shard.shape == param.shape, (mapping, shard.shape, param.shape)
            with torch.no_grad():
                param.copy_(shard)


def _gather_tp(tensor: torch.Tensor) -> list[torch.Tensor]:
    from megatron.core import parallel_state

    group = parallel_state.get_tensor_model_parallel_group()
    shards = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(shards, tensor.contiguous(), group=group)
    return shards


def iter_megatron_as_hf(
    model_chunks: list[torch.nn.Module], hf_config: dict[str, Any]
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (HF name, full tensor) for this rank's PP stage, gathered over the TP group.

    Collective over the TP group: every TP rank must consume the iterator in lockstep; all of them
    get the full tensors. Replicated tensors may alias the parameters: do not modify them in place.
    A tied output layer (last stage copy of the embedding) is skipped.
    """
    from megatron.core import parallel_state

    tp = parallel_state.get_tensor_model_parallel_world_size()
    tied = bool(hf_config.get("tie_word_embeddings"))
    for chunk in model_chunks:
        model = unwrap_model(chunk)
        for mapping, param in _chunk_mappings(model, hf_config):
            if tied and mapping.mcore_name == "output_layer.weight" and not _is_critic(model):
                continue
            data = param.detach()
            shards = [data] if tp == 1 or mapping.kind == "replicated" else _gather_tp(data)
            yield from zip(mapping.hf_names, merge_shards(mapping, shards, hf_config))


def save_hf_checkpoint(
    model_chunks: list[torch.nn.Module],
    hf_config: dict[str, Any],
    out_dir: str | Path,
    source_dir: str | Path | None = None,
) -> None:
    """Write the model as an HF checkpoint (one safetensors file per PP stage + index, config.json).

    Collective over all ranks. TP rank 0 of data-parallel rank 0 of each stage writes its stage;
    global rank 0 writes the index, config.json and (from `source_dir`) tokenizer/generation files.
    """
    from megatron.core import parallel_state

    tensors = dict(iter_megatron_as_hf(model_chunks, hf_config))
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    writer = (
        parallel_state.get_tensor_model_parallel_rank() == 0
        and parallel_state.get_data_parallel_rank(with_context_parallel=True) == 0
    )
    if writer:
        write_hf_shard(tensors, out_dir, parallel_state.get_pipeline_model_parallel_rank(), pp)
    dist.barrier()
    if dist.get_rank() == 0:
        if source_dir is not None:
            copy_hf_side_files(source_dir, out_dir)
        write_hf_index(out_dir, pp)
        (Path(out_dir) / "config.json").write_text(json.dumps(hf_config, indent=2))
    dist.barrier()


def _check_layout(hf_config: dict[str, Any], tp: int, pp: int) -> None:
    heads = hf_config["num_attention_heads"]
    groups = hf_config.get("num_key_value_heads") or heads
    rules = {
        "num_key_value_heads": groups,
        "num_attention_heads": heads,
        "intermediate_size": hf_config["intermediate_size"],
    }
    for field, value in rules.items():
        if tp < 1 or value % tp:
            raise ValueError(f"--tp {tp} must be >= 1 and divide {field}={value}; pick another --tp")
    layers = hf_config["num_hidden_layers"]
    if pp < 1 or layers % pp:
        raise ValueError(f"--pp {pp} must be >= 1 and divide num_hidden_layers={layers}; pick another --pp")


def hf_to_mcore(hf_dir: str | Path, out_dir: str | Path, tp: int, pp: int) -> None:
    """Split an HF checkpoint into per-(TP, PP)-rank Megatron shards (local-spec names, no VPP)."""
    hf_config = load_hf_config(hf_dir)
    _check_layout(hf_config, tp, pp)
    reader = HFCheckpointReader(hf_dir)
    is_critic = VALUE_HEAD_HF_NAME in reader
    shapes = expected_hf_shapes(hf_config, is_critic=is_critic)
    layers_per_stage = hf_config["num_hidden_layers"] // pp
    for pp_rank in range(pp):
        layer_to_hf = {i: pp_rank * layers_per_stage + i for i in range(layers_per_stage)}
        mappings = [
            map_param(name, hf_config, layer_to_hf, is_critic)
            for name in mcore_param_names(hf_config, pp, pp_rank, is_critic)
        ]
        hf_tensors = {m.mcore_name: [reader.get(n, shapes[n]) for n in m.hf_names] for m in mappings}
        for tp_rank in range(tp):
            shard = {
                m.mcore_name: shard_for_rank(m, hf_tensors[m.mcore_name], hf_config, tp, tp_rank).clone()
                for m in mappings
            }
            path = mcore_rank_file(out_dir, tp_rank, pp_rank)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file(shard, path, metadata={"format": "pt"})
    copy_hf_side_files(hf_dir, out_dir)
    write_mcore_manifest(out_dir, tp, pp, is_critic)
    logger.info("wrote %s: tp=%d pp=%d from %s", out_dir, tp, pp, hf_dir)


def mcore_to_hf(mcore_dir: str | Path, out_dir: str | Path) -> None:
    """Merge the per-rank shards written by `hf_to_mcore` back into an HF checkpoint."""
    manifest = read_mcore_manifest(mcore_dir)
    hf_config = load_hf_config(mcore_dir)
    tp, pp, is_critic = manifest["tensor_parallel"], manifest["pipeline_parallel"], manifest["is_critic"]
    tied = bool(hf_config.get("tie_word_embeddings"))
    layers_per_stage = hf_config["num_hidden_layers"] // pp
    for pp_rank in range(pp):
        layer_to_hf = {i: pp_rank * layers_per_stage + i for i in range(layers_per_stage)}
        handles = [safe_open(mcore_rank_file(mcore_dir, r, pp_rank), framework="pt") for r in range(tp)]
        stage: dict[str, torch.Tensor] = {}
        for name in mcore_param_names(hf_config, pp, pp_rank, is_critic):
            if tied and name == "output_layer.weight" and not is_critic:
                continue
            mapping = map_param(name, hf_config, layer_to_hf, is_critic)
            merged = merge_shards(mapping, [h.get_tensor(name) for h in handles], hf_config)
            stage.update(zip(mapping.hf_names, merged))
        write_hf_shard(stage, out_dir, pp_rank, pp)
    write_hf_index(out_dir, pp)
    copy_hf_side_files(mcore_dir, out_dir)
    logger.info("wrote HF checkpoint %s from %s (tp=%d pp=%d)", out_dir, mcore_dir, tp, pp)


# Transformer-Engine specs fuse the pre-attention/pre-MLP norms into the next linear layer.
_TE_TO_LOCAL_NAMES = {
    "self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
    "mlp.linear_fc1.layer_norm_weight": "pre_mlp_layernorm.weight",
}


def _local_spec_name(name: str) -> str:
    for te_suffix, local_suffix in _TE_TO_LOCAL_NAMES.items():
        if name.endswith(te_suffix):
            return name[: -len(te_suffix)] + local_suffix
    return name


def load_mcore_into_megatron(model_chunks: list[torch.nn.Module], mcore_dir: str | Path) -> None:
    """Copy this rank's shard written by `hf_to_mcore` into `model_chunks` (same TP/PP, no VPP).

    Each rank reads only its own file; a layout or shape mismatch raises naming both sides.
    """
    from megatron.core import parallel_state

    manifest = read_mcore_manifest(mcore_dir)
    layout = (
        parallel_state.get_tensor_model_parallel_world_size(),
        parallel_state.get_pipeline_model_parallel_world_size(),
    )
    saved = (manifest["tensor_parallel"], manifest["pipeline_parallel"])
    if layout != saved or len(model_chunks) != 1:
        raise ValueError(
            f"{mcore_dir} was written for (tp, pp)={saved} without VPP, but this model runs (tp, pp)={layout} "
            f"with {len(model_chunks)} chunk(s); re-run `roll convert hf-to-mcore` with --tp {layout[0]} --pp {layout[1]}"
        )
    path = mcore_rank_file(
        mcore_dir,
        parallel_state.get_tensor_model_parallel_rank(),
        parallel_state.get_pipeline_model_parallel_rank(),
    )
    model = unwrap_model(model_chunks[0])
    with safe_open(path, framework="pt") as handle:
        stored = set(handle.keys())
        for name, param in model.named_parameters():
            key = _local_spec_name(name)
            if key not in stored:
                raise KeyError(f"{path}: tensor {key!r} is missing")
            shape = tuple(handle.get_slice(key).get_shape())
            if shape != tuple(param.shape):
                raise ValueError(
                    f"{path}: tensor {key!r} has shape {shape} but the model expects {tuple(param.shape)}"
                )
            with torch.no_grad():
                param.copy_(handle.get_tensor(key))


def hf_to_mcore_main(args: argparse.Namespace) -> None:
    """`roll convert hf-to-mcore --hf DIR --out DIR --tp N --pp N`."""
    hf_to_mcore(args.hf, args.out, int(args.tp), int(args.pp))


def mcore_to_hf_main(args: argparse.Namespace) -> None:
    """`roll convert mcore-to-hf --mcore DIR --out DIR`."""
    mcore_to_hf(args.mcore, args.out)
