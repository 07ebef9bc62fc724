"""Megatron (gloo, CPU) vs transformers: same random HF weights -> same fp32 logits; and the
HF checkpoint exported from the sharded model is bit-identical to the one loaded.

Llama, Qwen2 (QKV bias) and Qwen3 (QK-norm) tiny models (2 layers, hidden 64, vocab 128 -> padded
to 256 at TP2, 4 heads, 2 KV heads) at TP1, TP2, TP2+SP, PP2 (also with tied embeddings), PP2xVPP2
(a 4-layer Qwen3) and TP2xPP2, on a right-padded batch compared on real positions only. The critic's
values (TP1, TP2+SP) are compared with transformers' final hidden states times the value head.
One spawned process group per world size runs all its cases.
"""

import shutil
from pathlib import Path

import pytest
import torch
from launcher import run_distributed
from megatron_harness import build_loaded_model, forward_logits, init_parallel
from safetensors.torch import load_file, save_file

from roll.models.megatron_builder import load_hf_config
from roll.models.tiny import save_tiny_hf_model

ARCHS = ("llama", "qwen2", "qwen3")
LENGTHS = (10, 7, 4)
ATOL = 1e-4


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    dirs = {arch: save_tiny_hf_model(arch, root / arch, seed=i) for i, arch in enumerate(ARCHS)}
    dirs["llama_tied"] = save_tiny_hf_model("llama", root / "llama_tied", seed=7, tie_word_embeddings=True)
    dirs["qwen3_4layers"] = save_tiny_hf_model("qwen3", root / "qwen3_4layers", seed=8, num_hidden_layers=4)
    return dirs


@pytest.fixture(scope="module")
def critic_checkpoint(checkpoints, tmp_path_factory) -> Path:
    """The Qwen2 checkpoint plus a random value head `score.weight`."""
    out = tmp_path_factory.mktemp("critic")
    tensors = load_file(checkpoints["qwen2"] / "model.safetensors")
    tensors["score.weight"] = torch.randn(1, 64, generator=torch.Generator().manual_seed(3))
    save_file(tensors, out / "model.safetensors")
    shutil.copy(checkpoints["qwen2"] / "config.json", out / "config.json")
    return out


@pytest.fixture(scope="module")
def hf_values(critic_checkpoint, batch) -> torch.Tensor:
    from transformers import AutoModel

    input_ids, mask = batch
    backbone = AutoModel.from_pretrained(critic_checkpoint, dtype=torch.float32).eval()
    score = load_file(critic_checkpoint / "model.safetensors")["score.weight"]
    with torch.no_grad():
        return (backbone(input_ids=input_ids, attention_mask=mask).last_hidden_state @ score.T).squeeze(-1)


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, S) input_ids and attention_mask."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, 128, (len(LENGTHS), max(LENGTHS)), generator=generator)
    mask = torch.zeros_like(input_ids)
    for row, length in enumerate(LENGTHS):
        mask[row, :length] = 1
    return input_ids * mask, mask


@pytest.fixture(scope="module")
def hf_logits(checkpoints, batch) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    input_ids, mask = batch
    out = {}
    for name, path in checkpoints.items():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        with torch.no_grad():
            out[name] = model(input_ids=input_ids, attention_mask=mask).logits
    return out


def _export_dir(root: Path, layout: tuple, name: str) -> Path:
    return root / ("_".join(map(str, layout)) + f"_{name}")


def _run_layouts(layouts: list[tuple], cases: dict[str, Path], input_ids: torch.Tensor, export_root: Path):
    """On each rank: {(tp, pp, vpp, sp, case): logits or None} for every layout and every case that
    the layout's layer count allows; each model is also exported as HF under `export_root`."""
    from roll.models.convert import save_hf_checkpoint

    results = {}
    for tp, pp, vpp, sp in layouts:
        init_parallel(tp, pp, vpp)
        for name, path in cases.items():
            if load_hf_config(path)["num_hidden_layers"] % (pp * (vpp or 1)):
                continue
            hf_config, chunks = build_loaded_model(path, tp, pp, vpp=vpp, sequence_parallel=sp)
            layout = (tp, pp, vpp, sp)
            results[(*layout, name)] = forward_logits(chunks, input_ids, hf_config["vocab_size"])
            save_hf_checkpoint(chunks, hf_config, _export_dir(export_root, layout, name), source_dir=path)
    return results


def _critic_values(path: Path, tp: int, sp: bool, input_ids: torch.Tensor) -> torch.Tensor:
    init_parallel(tp, 1)
    _, chunks = build_loaded_model(path, tp, 1, sequence_parallel=sp, is_critic=True)
    with torch.no_grad():
        return chunks[0](input_ids, torch.arange(input_ids.shape[1]).expand_as(input_ids), None)


def _tp1_critic_and_bad_shapes(
    cases: dict[str, Path], critic: Path, input_ids: torch.Tensor, export_root: Path
):
    """TP1 logits and exports; critic values with a loaded and with a fresh (zero) value head; the
    error of loading a checkpoint into a model of other shapes."""
    from roll.models.convert import load_hf_into_megatron
    from roll.models.megatron_builder import build_model_chunks, build_transformer_config

    results = _run_layouts([(1, 1, None, False)], cases, input_ids, export_root)
    values = _critic_values(critic, 1, False, input_ids)
    fresh_values = _critic_values(cases["qwen2"], 1, False, input_ids)
    wrong = {**load_hf_config(cases["qwen2"]), "intermediate_size": 96}
    chunks = build_model_chunks(
        wrong, build_transformer_config(wrong, tensor_parallel=1, pipeline_parallel=1)
    )
    try:
        load_hf_into_megatron(chunks, cases["qwen2"], wrong)
    except ValueError as error:
        return results, values, fresh_values, str(error)
    return results, values, fresh_values, None


def _world2(layouts: list[tuple], cases: dict[str, Path], critic: Path, input_ids, export_root: Path):
    """The 2-process layouts, then the critic at TP2 with sequence parallelism, then megatron's TP
    batch broadcast (hard-codes CUDA tensors; run through the CPU layer)."""
    from megatron.core import parallel_state, tensor_parallel

    results = _run_layouts(layouts, cases, input_ids, export_root)
    values = _critic_values(critic, 2, True, input_ids)
    source = {"input_ids": input_ids} if parallel_state.get_tensor_model_parallel_rank() == 0 else None
    broadcast = tensor_parallel.broadcast_data(["input_ids"], source, torch.int64)["input_ids"]
    return results, values, broadcast


def _load_hf_dir(path: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def _assert_exports_bit_exact(results: dict, checkpoints: dict[str, Path], export_root: Path) -> int:
    for *layout, name in results:
        exported = _load_hf_dir(_export_dir(export_root, tuple(layout), name))
        original = load_file(checkpoints[name] / "model.safetensors")
        assert exported.keys() == original.keys(), (name, exported.keys() ^ original.keys())
        for key, tensor in original.items():
            assert torch.equal(exported[key], tensor), f"{name} (tp, pp, vpp, sp)={layout}: {key} differs"
    return len(results)


def _assert_matches(results: list[dict], hf_logits: dict[str, torch.Tensor], mask: torch.Tensor) -> int:
    checked = 0
    real = mask.bool()
    for rank_results in results:
        for (*layout, name), logits in rank_results.items():
            if logits is None:
                continue
            expected = hf_logits[name]
            assert logits.shape == expected.shape, (layout, name, logits.shape)
            error = (logits[real] - expected[real]).abs().max().item()
            assert error < ATOL, f"{name} (tp, pp, vpp, sp)={layout}: max |logits - hf| = {error:.2e}"
            checked += 1
    return checked


def test_tp1_matches_transformers_critic_and_shape_errors(
    checkpoints, critic_checkpoint, batch, hf_logits, hf_values, tmp_path
):
    input_ids, mask = batch
    cases = {arch: checkpoints[arch] for arch in ARCHS}
    ((results, values, fresh_values, error),) = run_distributed(
        _tp1_critic_and_bad_shapes, 1, cases, critic_checkpoint, input_ids, tmp_path
    )
    assert _assert_matches([results], hf_logits, mask) == len(ARCHS)
    assert _assert_exports_bit_exact(results, checkpoints, tmp_path) == len(ARCHS)
    assert values.shape == input_ids.shape
    assert (values - hf_values)[mask.bool()].abs().max() < ATOL
    # A critic made from a causal-LM checkpoint (no `score.weight`) starts with a zero value head.
    assert torch.equal(fresh_values, torch.zeros_like(fresh_values))
    assert error is not None and "model.layers.0.mlp.gate_proj.weight" in error
    assert "(128, 64)" in error and "(96, 64)" in error


def test_tp2_sp_pp2_vpp2_match_transformers(
    checkpoints, critic_checkpoint, batch, hf_logits, hf_values, tmp_path
):
    input_ids, mask = batch
    layouts = [(2, 1, None, False), (2, 1, None, True), (1, 2, None, False), (1, 2, 2, False)]
    outputs = run_distributed(_world2, 2, layouts, dict(checkpoints), critic_checkpoint, input_ids, tmp_path)
    results = [logits for logits, _, _ in outputs]
    # Every TP rank returns logits; with PP only the last stage. VPP2 x PP2 needs the 4-layer model.
    assert _assert_matches(results, hf_logits, mask) == 2 * (len(checkpoints) * 2) + len(checkpoints) + 1
    assert _assert_exports_bit_exact(results[0], checkpoints, tmp_path) == 3 * len(checkpoints) + 1
    for _, values, broadcast in outputs:
        assert (values - hf_values)[mask.bool()].abs().max() < ATOL
        assert torch.equal(broadcast, input_ids)


def _world4(cases: dict[str, Path], mcore_dirs: dict[str, Path], input_ids, export_root: Path):
    """TP2xPP2 from HF checkpoints, then from the per-rank files of `roll convert hf-to-mcore`."""
    from roll.models.convert import load_mcore_into_megatron
    from roll.models.megatron_builder import build_model_chunks, build_transformer_config

    results = _run_layouts([(2, 2, None, False)], cases, input_ids, export_root)
    from_mcore = {}
    for name, mcore_dir in mcore_dirs.items():
        hf_config = load_hf_config(mcore_dir)
        chunks = build_model_chunks(
            hf_config, build_transformer_config(hf_config, tensor_parallel=2, pipeline_parallel=2)
        )
        load_mcore_into_megatron(chunks, mcore_dir)
        from_mcore[(2, 2, "mcore", False, name)] = forward_logits(chunks, input_ids, hf_config["vocab_size"])
    return results, from_mcore


def test_tp2_pp2_matches_transformers(checkpoints, batch, hf_logits, tmp_path):
    from roll.models.convert import hf_to_mcore

    input_ids, mask = batch
    cases = {name: path for name, path in checkpoints.items() if name != "qwen3_4layers"}
    mcore_dirs = {name: tmp_path / f"mcore_{name}" for name in ("qwen3", "llama_tied")}
    for name, out in mcore_dirs.items():
        hf_to_mcore(checkpoints[name], out, tp=2, pp=2)
    outputs = run_distributed(_world4, 4, cases, mcore_dirs, input_ids, tmp_path)
    assert _assert_matches([r for r, _ in outputs], hf_logits, mask) == len(cases) * 2
    assert _assert_exports_bit_exact(outputs[0][0], checkpoints, tmp_path) == len(cases)
    assert _assert_matches([m for _, m in outputs], hf_logits, mask) == len(mcore_dirs) * 2
