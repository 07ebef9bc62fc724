"""MegatronTrainStrategy edge modes on 2 gloo processes: a NaN loss or gradient on one DP rank skips the step
everywhere (weights, optimizer state and LR schedule untouched), and reference mode (no optimizer)
computes the HF log-probs but refuses to train."""

import math

import pytest
import torch
from launcher import run_distributed
from megatron_train_helpers import dp_slice, hf_reference, make_batch, nll_loss, save_model, worker_config

from roll.strategies.megatron_train import MegatronTrainStrategy

WARMUP = 3


def _poisoned_nll(outputs, micro):
    """NLL, made NaN on rows with micro["nan_loss"] = 1 and given a NaN gradient (but a finite
    value: d sqrt(0 * x) = inf * 0) on rows with micro["nan_grad"] = 1."""
    loss, metrics = nll_loss(outputs, micro)
    loss = loss + torch.where(micro["nan_loss"].bool(), float("nan"), 0.0).sum()
    log_probs = outputs["log_probs"][micro["nan_grad"].bool()]
    return loss + (log_probs.abs() * 0.0).sqrt().sum(), metrics


def _steps_with_nan(model_dir: str, poison: str | None) -> tuple[list[dict], bool]:
    """Three DP2 steps; in the second, `poison` ("nan_loss" | "nan_grad") hits the last row of the
    second DP rank only. Returns the metrics and whether that step left every parameter bit-identical."""
    batch = make_batch()
    batch["nan_loss"] = torch.zeros(len(batch["input_ids"]))
    batch["nan_grad"] = torch.zeros(len(batch["input_ids"]))
    strategy = MegatronTrainStrategy(worker_config(model_dir, 2, warmup_steps=WARMUP), seed=0)
    strategy.initialize()
    share = dp_slice(batch, strategy.data_parallel_rank, strategy.data_parallel_size)
    poisoned = {name: value.clone() for name, value in share.items()}
    if poison and strategy.data_parallel_rank == 1:
        poisoned[poison][-1] = 1.0
    metrics, untouched = [], True
    for step in range(3):
        before = [p.detach().clone() for module in strategy.modules() for p in module.parameters()]
        metrics.append(strategy.train_step(poisoned if step == 1 else share, _poisoned_nll))
        if step == 1:
            after = [p.detach() for module in strategy.modules() for p in module.parameters()]
            untouched = all(torch.equal(a, b) for a, b in zip(before, after))
    strategy.destroy()
    return metrics, untouched


def _reference(model_dir: str) -> dict:
    strategy = MegatronTrainStrategy(worker_config(model_dir, 2, pp=2, trainable=False), seed=0)
    strategy.initialize()
    log_probs = strategy.compute_log_probs(make_batch())
    try:
        strategy.train_step(make_batch(), nll_loss)
        refused = ""
    except RuntimeError as error:
        refused = str(error)
    result = {
        "optimizer": strategy.optimizer,
        "requires_grad": any(p.requires_grad for m in strategy.modules() for p in m.parameters()),
        "log_probs": log_probs["log_probs"].tolist(),
        "entropy": log_probs["entropy"].tolist(),
        "refused": refused,
    }
    strategy.destroy()
    return result


def _rank_fn(model_dir: str) -> dict:
    runs = {poison: _steps_with_nan(model_dir, poison) for poison in ("nan_loss", "nan_grad")}
    return {"clean": _steps_with_nan(model_dir, None), **runs, "ref": _reference(model_dir)}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> tuple[str, list[dict]]:
    model_dir = save_model(tmp_path_factory.mktemp("megatron_modes"))
    return model_dir, run_distributed(_rank_fn, 2, model_dir, timeout=120)


@pytest.mark.parametrize("poison", ["nan_loss", "nan_grad"])
def test_nan_on_one_rank_skips_the_step_everywhere(ranks, poison):
    _, results = ranks
    for result in results:
        clean, _ = result["clean"]
        nan_run, untouched = result[poison]
        assert [m["skipped"] for m in nan_run] == [0.0, 1.0, 0.0]
        assert math.isnan(nan_run[1]["grad_norm"])
        assert math.isnan(nan_run[1]["loss"]) == (poison == "nan_loss")
        assert untouched
        # The skipped step did not advance the warm-up either: steps 2 and 3 both use lr * 2/3.
        assert [m["lr"] for m in nan_run] == pytest.approx([1e-3 / WARMUP, 2e-3 / WARMUP, 2e-3 / WARMUP])
        # After the skip, training resumes exactly where the clean run's second step was.
        assert nan_run[2]["loss"] == clean[1]["loss"]
        assert nan_run[2]["grad_norm"] == clean[1]["grad_norm"]


def test_reference_mode_has_no_optimizer_and_matches_hf(ranks):
    model_dir, results = ranks
    ref_lp, ref_ent = hf_reference(model_dir, make_batch())
    for result in results:
        ref = result["ref"]
        assert ref["optimizer"] is None and not ref["requires_grad"]
        assert "reference mode" in ref["refused"]
        torch.testing.assert_close(torch.tensor(ref["log_probs"]), ref_lp, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.tensor(ref["entropy"]), ref_ent, rtol=1e-5, atol=1e-5)
