"""Safetensors checkpoint files: read HF checkpoints (single file or sharded with an index), write HF
checkpoints (one shard per pipeline stage + index), and the per-rank Megatron ("mcore") layout.

mcore layout written by `roll convert hf-to-mcore`:
    OUT/roll_mcore.json                          {"format": "roll-mcore", "tensor_parallel", ...}
    OUT/config.json (+ tokenizer files)          copied from the HF directory
    OUT/mp_rank_{tp:02d}_{pp:03d}/model.safetensors   that rank's local-spec parameters
"""

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

HF_INDEX_FILE = "model.safetensors.index.json"
HF_SINGLE_FILE = "model.safetensors"
MCORE_MANIFEST = "roll_mcore.json"
MCORE_FORMAT = "roll-mcore"


class HFCheckpointReader:
    """Lazy, shape-checked access to the tensors of an HF safetensors checkpoint directory."""

    def __init__(self, hf_dir: str | Path) -> None:
        self.hf_dir = Path(hf_dir)
        index = self.hf_dir / HF_INDEX_FILE
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            self.files = {name: self.hf_dir / file for name, file in weight_map.items()}
        elif (self.hf_dir / HF_SINGLE_FILE).is_file():
            with safe_open(self.hf_dir / HF_SINGLE_FILE, framework="pt") as handle:
                self.files = dict.fromkeys(handle.keys(), self.hf_dir / HF_SINGLE_FILE)
        else:
            raise FileNotFoundError(
                f"{self.hf_dir} has neither {HF_SINGLE_FILE} nor {HF_INDEX_FILE}; "
                "point to an HF checkpoint saved with safe_serialization=True"
            )
        self._handles: dict[Path, Any] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def get(self, name: str, expected_shape: tuple[int, ...]) -> torch.Tensor:
        """Tensor `name`; raises if it is missing or its shape is not `expected_shape`."""
        if name not in self.files:
            raise KeyError(f"{self.hf_dir}: tensor {name!r} is missing from the checkpoint")
        path = self.files[name]
        if path not in self._handles:
            self._handles[path] = safe_open(path, framework="pt")
        handle = self._handles[path]
        shape = tuple(handle.get_slice(name).get_shape())
        if shape != tuple(expected_shape):
            raise ValueError(
                f"{path}: tensor {name!r} has shape {shape} but config.json implies {tuple(expected_shape)}; "
                "the checkpoint does not match its config"
            )
        return handle.get_tensor(name)


def copy_hf_side_files(src_dir: str | Path, out_dir: str | Path) -> None:
    """Copy config/tokenizer/generation files (everything but weights and our manifest)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for path in Path(src_dir).iterdir():
        skip = path.suffix == ".safetensors" or path.name in (HF_INDEX_FILE, MCORE_MANIFEST)
        if path.is_file() and not skip:
            shutil.copy2(path, out / path.name)


def hf_shard_file_name(stage: int, num_stages: int) -> str:
    """HF file name of pipeline stage `stage`'s tensors: a single file when there is one stage."""
    return HF_SINGLE_FILE if num_stages == 1 else f"model-{stage + 1:05d}-of-{num_stages:05d}.safetensors"


def write_hf_shard(
    tensors: dict[str, torch.Tensor], out_dir: str | Path, stage: int, num_stages: int
) -> None:
    """Write one pipeline stage's HF tensors."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    save_file(cpu, out / hf_shard_file_name(stage, num_stages), metadata={"format": "pt"})


def write_hf_index(out_dir: str | Path, num_stages: int) -> None:
    """Write `model.safetensors.index.json` over the stage files (nothing to do for one stage)."""
    if num_stages == 1:
        return
    out = Path(out_dir)
    weight_map: dict[str, str] = {}
    total_size = 0
    for stage in range(num_stages):
        file = hf_shard_file_name(stage, num_stages)
        with safe_open(out / file, framework="pt") as handle:
            names = handle.keys()  # a safe_open handle is not iterable
            for name in names:
                weight_map[name] = file
                tensor_slice = handle.get_slice(name)
                numel = 1
                for dim in tensor_slice.get_shape():
                    numel *= dim
                total_size += numel * _DTYPE_BYTES[tensor_slice.get_dtype()]
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (out / HF_INDEX_FILE).write_text(json.dumps(index, indent=2))


_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


def mcore_rank_file(mcore_dir: str | Path, tp_rank: int, pp_rank: int) -> Path:
    return Path(mcore_dir) / f"mp_rank_{tp_rank:02d}_{pp_rank:03d}" / "model.safetensors"


def read_mcore_manifest(mcore_dir: str | Path) -> dict[str, Any]:
    path = Path(mcore_dir) / MCORE_MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; --mcore must be a directory written by `roll convert hf-to-mcore`"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != MCORE_FORMAT:
        raise ValueError(f"{path}: format={manifest.get('format')!r}, expected {MCORE_FORMAT!r}")
    return manifest


def write_mcore_manifest(
    mcore_dir: str | Path, tensor_parallel: int, pipeline_parallel: int, is_critic: bool
) -> None:
    manifest = {
        "format": MCORE_FORMAT,
        "version": 1,
        "tensor_parallel": tensor_parallel,
        "pipeline_parallel": pipeline_parallel,
        "is_critic": is_critic,
    }
    (Path(mcore_dir) / MCORE_MANIFEST).write_text(json.dumps(manifest, indent=2))
