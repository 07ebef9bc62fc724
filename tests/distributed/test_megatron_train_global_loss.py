"""Exact loss aggregation across micro-batches and data-parallel ranks (gloo, 2 processes).

On a batch whose responses have 8, 0 (a padding row), 1 and 6 tokens, one train_step at DP2 with
micro_batch_size 1 (four micro-batches of very different sizes on two ranks, whose trimmed widths differ) must give the
loss and grad norm of one single-process step with the whole batch as one micro-batch, for every
loss_agg_mode (actor) and for the critic. The same loss fn stripped of the strategy's whole-batch keys,
i.e. aggregated per micro-batch as before, gives a different loss and gradient: the check has teeth.
"""

import pytest
import torch
from launcher import run_distributed
from megatron_train_helpers import (
    BATCH,
    PROMPT,
    SEQ,
    dp_slice,
    hf_reference,
    make_batch,
    save_model,
    worker_config,
)

from roll.algorithms.loss_fns import (
    GLOBAL_HORIZON,
    GLOBAL_SEQ_COUNT,
    GLOBAL_TOKEN_COUNT,
    LOSS_SCALE,
    LossFn,
    make_actor_loss_fn,
    make_critic_loss_fn,
)
from roll.config.algorithm import AlgorithmConfig
from roll.distributed.batch import Batch
from roll.strategies.megatron_train import MegatronTrainStrategy

MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
# Within make_batch's row lengths (12, 9, 7, 10). DP rank 0 gets rows 0-1 (width 12), rank 1 rows 2-3
# (width 10): response tokens 8, 0 | 1, 6. Row 1 is all prompt, like a row padded in for divisibility.
LENGTHS = (12, 4, 5, 10)
WHOLE_BATCH_KEYS = (GLOBAL_TOKEN_COUNT, GLOBAL_SEQ_COUNT, GLOBAL_HORIZON, LOSS_SCALE)


def uneven_batch() -> dict[str, torch.Tensor]:
    """make_batch() cut to LENGTHS: responses of very different lengths."""
    batch = make_batch()
    positions = torch.arange(SEQ).expand(BATCH, SEQ)
    attention_mask = (positions < torch.tensor(LENGTHS).unsqueeze(1)).long()
    response_mask = ((positions >= PROMPT) & attention_mask.bool()).float()
    batch["input_ids"] = batch["input_ids"] * attention_mask
    batch["attention_mask"] = attention_mask
    for name in ("advantages", "old_log_probs", "values", "returns"):
        batch[name] = batch[name] * response_mask
    batch["response_mask"] = response_mask
    return batch


def actor_loss(mode: str) -> LossFn:
    return make_actor_loss_fn(AlgorithmConfig(use_kl_loss=False, loss_agg_mode=mode))


def per_micro_batch(loss_fn: LossFn) -> LossFn:
    """`loss_fn` without the whole-batch keys: each micro-batch aggregated on its own (the old objective)."""

    def local_loss_fn(outputs, micro):
        return loss_fn(
            outputs, {name: value for name, value in micro.items() if name not in WHOLE_BATCH_KEYS}
        )

    return local_loss_fn


def _one_step(
    model_dir: str, world: int, loss_fn: LossFn, num_micro_batches, is_critic: bool = False
) -> dict:
    """One train_step on this rank's share of the uneven batch; its metrics and the updated outputs."""
    batch = uneven_batch()
    strategy = MegatronTrainStrategy(worker_config(model_dir, world), seed=0, is_critic=is_critic)
    strategy.initialize()
    share = Batch(dp_slice(batch, strategy.data_parallel_rank, strategy.data_parallel_size))
    metrics = strategy.train_step(share, loss_fn, num_micro_batches=num_micro_batches)
    after = (
        strategy.compute_values(batch)["values"]
        if is_critic
        else strategy.compute_log_probs(batch)["log_probs"]
    )
    strategy.destroy()
    return {"metrics": metrics, "after": after.tolist()}


def _rank_fn(model_dir: str, world: int) -> dict:
    # One process: the whole batch is one micro-batch. Two: micro_batch_size 1 from worker_config.
    num_micro_batches = 1 if world == 1 else None
    results = {mode: _one_step(model_dir, world, actor_loss(mode), num_micro_batches) for mode in MODES}
    critic = make_critic_loss_fn(AlgorithmConfig(loss_agg_mode="seq-mean-token-mean"))
    results["critic"] = _one_step(model_dir, world, critic, num_micro_batches, is_critic=True)
    if world == 2:
        for mode in ("token-mean", "seq-mean-token-mean"):
            results[f"old {mode}"] = _one_step(model_dir, world, per_micro_batch(actor_loss(mode)), None)
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[str, dict, list[dict]]:
    model_dir = save_model(tmp_path_factory.mktemp("global_loss"))
    [single] = run_distributed(_rank_fn, 1, model_dir, 1, timeout=120)
    return model_dir, single, run_distributed(_rank_fn, 2, model_dir, 2, timeout=120)


def _relative_gap(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def test_single_process_step_is_the_whole_batch_loss_of_the_hf_model(runs):
    model_dir, single, _ = runs
    batch = uneven_batch()
    log_probs, entropy = hf_reference(model_dir, batch)
    for mode in MODES:
        loss, _ = actor_loss(mode)({"log_probs": log_probs, "entropy": entropy}, batch)
        assert single[mode]["metrics"]["loss"] == pytest.approx(loss.item(), rel=1e-5), mode


@pytest.mark.parametrize("key", [*MODES, "critic"])
def test_dp2_micro_batch_1_matches_one_process_one_micro_batch(runs, key):
    _, single, ranks = runs
    expected = single[key]["metrics"]
    for rank in ranks:
        got = rank[key]["metrics"]
        for name in ("loss", "grad_norm", "vf_loss" if key == "critic" else "pg_loss"):
            assert _relative_gap(got[name], expected[name]) <= 1e-5, (
                f"{key} {name}: {got[name]} vs {expected[name]}"
            )
        if key != "critic":  # the entropy metric is aggregated like the loss
            assert _relative_gap(got["entropy"], expected["entropy"]) <= 1e-5
        torch.testing.assert_close(
            torch.tensor(rank[key]["after"]), torch.tensor(single[key]["after"]), rtol=1e-5, atol=1e-5
        )
    assert ranks[0][key]["metrics"] == ranks[1][key]["metrics"]


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_per_micro_batch_aggregation_would_differ(runs, mode):
    _, single, ranks = runs
    old, exact = ranks[0][f"old {mode}"]["metrics"], single[mode]["metrics"]
    assert _relative_gap(old["loss"], exact["loss"]) > 1e-2
    assert _relative_gap(old["grad_norm"], exact["grad_norm"]) > 1e-2
