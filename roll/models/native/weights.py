"""Build a native decoder from an HF checkpoint directory (config.json + safetensors, single or sharded)."""

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from roll.models.native.config import DecoderConfig
from roll.models.native.decoder import NativeCausalLM

SINGLE_FILE = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"


def safetensors_files(model_dir: str | Path) -> list[Path]:
    """The checkpoint's safetensors files: the shards named by the index, else the single file."""
    model_dir = Path(model_dir)
    index = model_dir / SHARD_INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [model_dir / shard for shard in sorted(set(weight_map.values()))]
    single = model_dir / SINGLE_FILE
    if single.is_file():
        return [single]
    raise FileNotFoundError(
        f"{model_dir} has neither {SINGLE_FILE} nor {SHARD_INDEX}; save the model with "
        f"save_pretrained(..., safe_serialization=True)"
    )


def iter_safetensors(model_dir: str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, tensor) for every tensor of the checkpoint, one at a time (bounded memory)."""
    for path in safetensors_files(model_dir):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not iterable
                yield name, f.get_tensor(name)


def load_native_model(
    model_dir: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> NativeCausalLM:
    """A NativeCausalLM in eval mode with every parameter loaded from `model_dir`."""
    config = DecoderConfig.from_model_dir(model_dir)
    # Build on the meta device so no time goes into random init that the checkpoint overwrites.
    with torch.device("meta"):
        model = NativeCausalLM(config)
    model = model.to_empty(device=device).to(dtype)
    model.tie_weights()
    loaded = model.copy_named_tensors(iter_safetensors(model_dir))
    missing = sorted(set(model.param_by_hf_name()) - loaded)
    if config.tie_word_embeddings and "model.embed_tokens.weight" in loaded:
        missing = [name for name in missing if name != "lm_head.weight"]
    if missing:
        raise ValueError(
            f"checkpoint {model_dir} lacks {len(missing)} weights of the {config.model_type} decoder, "
            f"e.g. {missing[:3]}; the safetensors do not match config.json"
        )
    return model.eval()
