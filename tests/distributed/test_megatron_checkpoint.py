"""MegatronTrainStrategy checkpoints on 2 gloo processes (DP2 with distributed-optimizer shards, TP2):
save after 2 steps -> fresh strategy resumes -> step 3 equals the uninterrupted step 3 exactly
(loss, grad norm, warm-up + cosine LR, weights); the HF export after step 3 reproduces the trained
model's log-probs in transformers; a checkpoint refuses to load into a different layout."""

import pytest
import torch
from launcher import run_distributed
from megatron_train_helpers import hf_reference, make_batch, nll_loss, save_model, train, worker_config

from roll.strategies.megatron_train import MegatronTrainStrategy

LAYOUTS = {"dp2": {}, "tp2": {"tp": 2}}
SCHEDULE = {"warmup_steps": 2, "lr_schedule": "cosine", "min_lr": 1e-4}
EXTRA = {"epoch": 1, "data_cursor": [3, 5]}


def _strategy(model_dir: str, layout: dict, checkpoint_dir=None) -> MegatronTrainStrategy:
    config = worker_config(model_dir, 2, checkpoint_dir=checkpoint_dir, **layout, **SCHEDULE)
    strategy = MegatronTrainStrategy(config, seed=0, lr_decay_steps=6)
    strategy.initialize()
    return strategy


def _save_resume(model_dir: str, root: str, name: str, layout: dict) -> dict:
    batch = make_batch()
    ckpt, export = f"{root}/{name}/ckpt", f"{root}/{name}/hf"
    uninterrupted = _strategy(model_dir, layout)
    first_two = train(uninterrupted, batch, nll_loss, steps=2)
    uninterrupted.save_checkpoint(ckpt, step=2, extra=EXTRA)
    [third] = train(uninterrupted, batch, nll_loss, steps=1)
    log_probs = uninterrupted.compute_log_probs(batch)["log_probs"]
    uninterrupted.export_hf(export)
    uninterrupted.destroy()

    resumed = _strategy(model_dir, layout, checkpoint_dir=ckpt)
    resume_point = resumed.resume_point
    [resumed_third] = train(resumed, batch, nll_loss, steps=1)
    resumed_log_probs = resumed.compute_log_probs(batch)["log_probs"]
    resumed.destroy()
    return {
        "first_two": first_two,
        "third": third,
        "resumed_third": resumed_third,
        "resume_point": resume_point,
        "log_probs_equal": torch.equal(log_probs, resumed_log_probs),
        "log_probs": log_probs.tolist(),
        "export": export,
        "ckpt": ckpt,
    }


def _rank_fn(model_dir: str, root: str) -> dict:
    results = {name: _save_resume(model_dir, root, name, layout) for name, layout in LAYOUTS.items()}
    try:
        _strategy(model_dir, LAYOUTS["dp2"], checkpoint_dir=results["tp2"]["ckpt"])
        results["layout_error"] = ""
    except ValueError as error:
        results["layout_error"] = str(error)
    return results


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> tuple[str, list[dict]]:
    root = tmp_path_factory.mktemp("megatron_ckpt")
    model_dir = save_model(root)
    return model_dir, run_distributed(_rank_fn, 2, model_dir, str(root), timeout=120)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_resume_gives_the_uninterrupted_next_step(ranks, name):
    _, results = ranks
    for result in results:
        run = result[name]
        assert run["resume_point"] == (2, EXTRA)
        assert run["resumed_third"] == run["third"]  # loss, grad norm, lr: bit-identical
        assert run["log_probs_equal"]
        lrs = [step["lr"] for step in run["first_two"]] + [run["third"]["lr"]]
        assert lrs[0] == pytest.approx(0.5e-3) and lrs[1] == pytest.approx(1e-3)  # warm-up
        assert 1e-4 < lrs[2] < 1e-3  # cosine decay has started


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_hf_export_reproduces_trained_log_probs(ranks, name):
    _, results = ranks
    run = results[0][name]
    ref_log_probs, _ = hf_reference(run["export"], make_batch())
    torch.testing.assert_close(torch.tensor(run["log_probs"]), ref_log_probs, rtol=1e-5, atol=1e-5)


def test_checkpoint_refuses_a_different_layout(ranks):
    _, results = ranks
    for result in results:
        assert "tensor_parallel" in result["layout_error"] and "same parallel sizes" in result["layout_error"]
