"""MegatronTrainStrategy on real gloo process groups vs a single-process run and HF transformers.

Three Adam steps (grad clipping, weight decay) on a fixed right-padded batch must give the
single-process losses and grad norms under TP2, TP2+SP, PP2, DP2 (2 processes) and TP2xPP2,
PP2xVPP2xDP2 (4 processes), and stay close under bf16; vocab-parallel log-probs/entropy must equal a full-vocab log_softmax
of the HF model's logits; roll.algorithms' PPO and value losses plug in as loss_fn.
"""

import pytest
import torch
from launcher import run_distributed
from megatron_train_helpers import (
    assert_metrics_close,
    critic_loss,
    hf_reference,
    make_batch,
    nll_loss,
    ppo_loss,
    save_model,
    train,
    worker_config,
)

from roll.strategies.megatron_train import MegatronTrainStrategy


def _log_probs(strategy, batch) -> dict[str, list]:
    out = strategy.compute_log_probs(batch)
    return {name: value.tolist() for name, value in out.items()}


def _actor_run(model_dir: str, world: int, layout: dict, losses: tuple[str, ...]) -> dict:
    """Initial log-probs, then per loss: 3 training steps and the final log-probs."""
    batch = make_batch()
    result = {}
    for name in losses:
        strategy = MegatronTrainStrategy(worker_config(model_dir, world, **layout), seed=0)
        strategy.initialize()
        if "initial" not in result:
            result["initial"] = _log_probs(strategy, batch)
        result[name] = train(strategy, batch, nll_loss if name == "nll" else ppo_loss())
        result[f"{name}_final"] = _log_probs(strategy, batch)["log_probs"]
        strategy.destroy()
    return result


def _critic_run(model_dir: str, world: int, layout: dict) -> dict:
    batch = make_batch()
    strategy = MegatronTrainStrategy(worker_config(model_dir, world, **layout), seed=0, is_critic=True)
    strategy.initialize()
    metrics = train(strategy, batch, critic_loss())
    values = strategy.compute_values(batch)["values"].tolist()
    strategy.destroy()
    return {"metrics": metrics, "values": values}


def _rank_fn(model_dir: str, world: int, actor_layouts: list[tuple], critic_layouts: list[dict]) -> dict:
    results = {}
    for key, layout, losses in actor_layouts:
        results[key] = _actor_run(model_dir, world, layout, losses)
    for layout in critic_layouts:
        results[f"critic{sorted(layout.items())}"] = _critic_run(model_dir, world, layout)
    return results


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return save_model(tmp_path_factory.mktemp("megatron_train"))


@pytest.fixture(scope="module")
def single(model_dir) -> dict:
    """The single-process reference: actor with both losses and the critic."""
    [result] = run_distributed(_rank_fn, 1, model_dir, 1, [("single", {}, ("nll", "ppo"))], [{}], timeout=120)
    return result


def _check_actor(result: dict, single: dict, model_dir: str) -> None:
    ref_lp, ref_ent = hf_reference(model_dir, make_batch())
    torch.testing.assert_close(torch.tensor(result["initial"]["log_probs"]), ref_lp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor(result["initial"]["entropy"]), ref_ent, rtol=1e-5, atol=1e-5)
    for loss in ("nll", "ppo"):
        if loss in result:
            assert_metrics_close(result[loss], single["single"][loss])
            torch.testing.assert_close(
                torch.tensor(result[f"{loss}_final"]),
                torch.tensor(single["single"][f"{loss}_final"]),
                rtol=1e-5,
                atol=1e-5,
            )


def test_single_process_matches_hf_and_learns(single, model_dir):
    _check_actor(single["single"], single, model_dir)
    nll = single["single"]["nll"]
    assert all(step["skipped"] == 0.0 and step["lr"] == pytest.approx(1e-3) for step in nll)
    assert nll[-1]["loss"] < nll[0]["loss"]  # three Adam steps on one batch reduce its NLL
    ppo = single["single"]["ppo"]
    assert {"pg_loss", "pg_clipfrac", "ppo_kl"} <= set(ppo[0])
    assert ppo[0]["loss"] == pytest.approx(ppo[0]["pg_loss"], rel=1e-6)


def test_two_process_layouts_match_single_process(single, model_dir):
    layouts = [
        ("tp2", {"tp": 2}, ("nll",)),
        ("tp2_sp", {"tp": 2, "sp": True}, ("nll",)),
        ("pp2", {"pp": 2}, ("nll",)),
        ("dp2", {}, ("nll", "ppo")),
    ]
    bf16 = ("tp2_bf16", {"tp": 2, "dtype": "bf16"}, ("nll",))
    ranks = run_distributed(_rank_fn, 2, model_dir, 2, [*layouts, bf16], [{"pp": 2}], timeout=120)
    for result in ranks:
        for key, _, _ in layouts:
            _check_actor(result[key], single, model_dir)
        # bf16 weights and activations (fp32 main params in the optimizer): close, not equal.
        assert_metrics_close(result["tp2_bf16"]["nll"], single["single"]["nll"], keys=("loss",), rtol=2e-3)
        torch.testing.assert_close(
            torch.tensor(result["tp2_bf16"]["initial"]["log_probs"]),
            torch.tensor(single["single"]["initial"]["log_probs"]),
            rtol=0.0,
            atol=0.05,
        )
        critic, critic_single = result["critic[('pp', 2)]"], single["critic[]"]
        assert_metrics_close(
            critic["metrics"], critic_single["metrics"], keys=("loss", "grad_norm", "vf_loss")
        )
        torch.testing.assert_close(torch.tensor(critic["values"]), torch.tensor(critic_single["values"]))
    for key, _, _ in layouts:  # every rank reports the same numbers
        assert ranks[0][key]["nll"] == ranks[1][key]["nll"]


def test_four_process_layouts_match_single_process(single, model_dir):
    layouts = [("tp2_pp2", {"tp": 2, "pp": 2}, ("nll",)), ("pp2_vpp2_dp2", {"pp": 2, "vpp": 2}, ("nll",))]
    ranks = run_distributed(_rank_fn, 4, model_dir, 4, layouts, [], timeout=120)
    for result in ranks:
        for key, _, _ in layouts:
            _check_actor(result[key], single, model_dir)
