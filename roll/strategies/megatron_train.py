"""Megatron-Core training strategy: one role's model over TP/PP(+VPP)/DP on the ranks of its group.

    strategy = MegatronTrainStrategy(worker_config, seed=0)
    strategy.initialize()                       # after roll.platform.init_distributed()
    metrics = strategy.train_step(batch, loss_fn)
    out = strategy.compute_log_probs(batch)     # {"log_probs", "entropy"}: (B, S), valid on all ranks

Every rank of a data-parallel replica receives the same (per-DP-rank) batch. It is cut into
micro-batches of `worker_config.micro_batch_size` and run through Megatron's
`forward_backward_func` (no pipelining, 1F1B or interleaved 1F1B). Log-probs and entropy are
computed vocab-parallel from the local logits shard (`roll.kernels.logprobs`): the full vocabulary
is never gathered on one rank.

Loss scaling: `loss_fn(outputs, micro)` returns the loss of one micro-batch; Megatron divides it by
the number of micro-batches and DDP averages gradients over data-parallel ranks. So that the result
is the loss aggregated over the whole global mini-batch (all micro-batches on all DP ranks) in one
piece, `train_step` adds to every micro-batch the mini-batch's response-token and sequence counts
(summed over the DP group), its padded width and the loss scale num_micro_batches x dp_size
(`megatron_micro.global_loss_keys`); the loss fns of `roll.algorithms.loss_fns` return their share of
the global aggregate times that scale. Any micro-batch size and TP/PP/DP layout then gives the
gradient of one single-process, single-micro-batch step. A loss fn that ignores these keys is
aggregated per micro-batch: its objective is the mean over micro-batches of the global batch.

A role without `worker_config.optimizer` is a frozen reference (no DDP, no optimizer).
"""

import math
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel
from megatron.core.distributed import DistributedDataParallel
from megatron.core.optimizer_param_scheduler import get_canonical_lr_for_logging
from megatron.core.pipeline_parallel import get_forward_backward_func

from roll.algorithms.loss_fns import LossFn
from roll.config.worker import WorkerConfig
from roll.kernels.logprobs import logprobs_from_logits
from roll.models.convert import iter_megatron_as_hf, load_hf_into_megatron, save_hf_checkpoint
from roll.models.megatron_builder import build_model_chunks, build_transformer_config, load_hf_config
from roll.platform import current_device, get_device_type
from roll.strategies import megatron_checkpoint
from roll.strategies.megatron_micro import (
    align_to_tokens,
    batch_tensors,
    global_loss_keys,
    mask_padded_vocab,
    pad_to_width,
    split_micro_batches,
    trimmed_width,
)
from roll.strategies.megatron_optim import build_optimizer, grads_are_finite, wrap_ddp
from roll.utils.logging import get_logger

logger = get_logger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class MegatronTrainStrategy:
    """Train / reference / critic model of one role on Megatron-Core (see the module docstring).

    `seed` seeds torch and megatron's model-parallel RNG tracker; `is_critic` builds the value-head
    model (compute_values instead of compute_log_probs); `lr_decay_steps` is the total number of
    optimizer steps, needed by the cosine and linear LR schedules.
    """

    def __init__(
        self,
        worker_config: WorkerConfig,
        *,
        seed: int = 0,
        is_critic: bool = False,
        lr_decay_steps: Optional[int] = None,
    ) -> None:
        if worker_config.context_parallel != 1:
            raise ValueError(
                f"context_parallel={worker_config.context_parallel}: megatron_train does not support context "
                "parallelism yet; set context_parallel=1"
            )
        self.worker_config = worker_config
        self.seed = seed
        self.is_critic = is_critic
        self.lr_decay_steps = lr_decay_steps
        self.model: list[torch.nn.Module] = []
        self.optimizer = None
        self.scheduler = None
        self.hf_config: dict[str, Any] = {}
        self.resume_point: Optional[tuple[int, dict]] = None
        """(step, extra) of the checkpoint loaded by `initialize()` from worker_config.checkpoint_dir."""

    # ---- set-up ---------------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        """Parameter/compute dtype: worker_config.dtype, with "auto" = bf16 on GPU and fp32 on CPU."""
        if self.worker_config.dtype == "auto":
            return torch.bfloat16 if get_device_type() == "cuda" else torch.float32
        return _DTYPES[self.worker_config.dtype]

    def initialize(self) -> None:
        """Set up the model-parallel groups, build and load the model, and (if trainable) DDP,
        the distributed optimizer and the LR schedule. torch.distributed must be initialised."""
        cfg = self.worker_config
        if not dist.is_initialized():
            raise RuntimeError(
                "MegatronTrainStrategy.initialize: call roll.platform.init_distributed() first"
            )
        world = dist.get_world_size()
        if world % cfg.model_parallel_size:
            raise ValueError(
                f"tensor_parallel({cfg.tensor_parallel}) x pipeline_parallel({cfg.pipeline_parallel}) = "
                f"{cfg.model_parallel_size} does not divide the world size {world}"
            )
        self._init_parallel_state()
        self.hf_config = load_hf_config(cfg.model_path)
        transformer_config = build_transformer_config(
            self.hf_config,
            tensor_parallel=cfg.tensor_parallel,
            pipeline_parallel=cfg.pipeline_parallel,
            virtual_pipeline_parallel=cfg.virtual_pipeline_parallel,
            sequence_parallel=cfg.sequence_parallel,
            dtype=self.dtype,
            recompute=cfg.recompute,
        )
        chunks = build_model_chunks(self.hf_config, transformer_config, is_critic=self.is_critic)
        if not cfg.checkpoint_dir:
            load_hf_into_megatron(chunks, cfg.model_path, self.hf_config)
        if cfg.optimizer is None:
            for chunk in chunks:
                chunk.requires_grad_(False)
            self.model = chunks
        else:
            self.model = wrap_ddp(chunks, transformer_config)
            self.optimizer, self.scheduler = build_optimizer(
                self.model, cfg.optimizer, self.dtype, self.lr_decay_steps
            )
        if cfg.checkpoint_dir:
            self.resume_point = self.load_checkpoint(cfg.checkpoint_dir)

    def _init_parallel_state(self) -> None:
        cfg = self.worker_config
        if parallel_state.model_parallel_is_initialized():
            current = (
                parallel_state.get_tensor_model_parallel_world_size(),
                parallel_state.get_pipeline_model_parallel_world_size(),
            )
            if current != (cfg.tensor_parallel, cfg.pipeline_parallel):
                raise RuntimeError(
                    f"model parallelism is already initialised in this process with (TP, PP) = {current}, "
                    f"but this role needs ({cfg.tensor_parallel}, {cfg.pipeline_parallel}); colocated roles "
                    "must share one layout"
                )
        else:
            parallel_state.initialize_model_parallel(
                tensor_model_parallel_size=cfg.tensor_parallel,
                pipeline_model_parallel_size=cfg.pipeline_parallel,
                virtual_pipeline_model_parallel_size=cfg.virtual_pipeline_parallel,
                expert_model_parallel_size=cfg.expert_parallel,
            )
        torch.manual_seed(self.seed)
        tensor_parallel.model_parallel_cuda_manual_seed(self.seed)

    @property
    def data_parallel_rank(self) -> int:
        """Which data-parallel replica this rank belongs to (it must be fed that replica's batch)."""
        return parallel_state.get_data_parallel_rank()

    @property
    def data_parallel_size(self) -> int:
        """Number of data-parallel replicas."""
        return parallel_state.get_data_parallel_world_size()

    def destroy(self) -> None:
        """Drop the model and optimizer and tear down megatron's model-parallel groups of this process."""
        self.model, self.optimizer, self.scheduler = [], None, None
        parallel_state.destroy_model_parallel()

    def modules(self) -> list[torch.nn.Module]:
        """The model chunks of this rank without the DDP wrappers (one per virtual pipeline stage)."""
        return [chunk.module if isinstance(chunk, DistributedDataParallel) else chunk for chunk in self.model]

    # ---- training -------------------------------------------------------------------------------

    def train_step(
        self, batch, loss_fn: LossFn, *, num_micro_batches: Optional[int] = None, temperature: float = 1.0
    ) -> dict[str, float]:
        """One optimizer step over this DP rank's `batch`; returns the same metrics on every rank.

        Metrics: `loss` and `loss_fn`'s metrics, each the mean of its micro-batch values over all
        micro-batches and DP ranks (for the loss fns of roll.algorithms.loss_fns, `loss` and their
        aggregated metrics are thus the whole global mini-batch's values; see the module docstring),
        `grad_norm` (before clipping), `lr` (of this step) and `skipped` (1.0 when a NaN/inf loss
        or gradient on any rank skipped the update; weights, optimizer state and LR schedule are then
        untouched). `num_micro_batches` overrides worker_config.micro_batch_size; `temperature` is
        the sampling temperature the log-probs are computed at.
        """
        if self.optimizer is None:
            raise RuntimeError(
                "train_step needs an optimizer, but worker_config.optimizer is None (reference mode); "
                "set worker_config.optimizer to train this role"
            )
        for chunk in self.model:
            chunk.train()
            chunk.zero_grad_buffer()
        self.optimizer.zero_grad()
        tensors = batch_tensors(batch)
        micros, micro_batch_size, width = self._micro_batches(tensors, num_micro_batches)
        whole_batch = global_loss_keys(
            tensors, len(micros), parallel_state.get_data_parallel_group(), current_device()
        )
        for micro in micros:
            micro.update(whole_batch)
        micro_loss = partial(self._train_micro_loss, loss_fn, temperature)
        store = self._run(micros, micro_loss, micro_batch_size, width, forward_only=False)
        metrics = self._reduce_metrics(store)
        lr = get_canonical_lr_for_logging(self.optimizer.param_groups)
        # The reduced loss is the same on every rank, so all ranks agree on the branch (the grad
        # check is a collective). fp16 reaches the optimizer either way so its loss scaler can back off.
        if math.isfinite(metrics["loss"]) and (grads_are_finite(self.model) or self.dtype == torch.float16):
            success, grad_norm, _ = self.optimizer.step()
        else:
            success, grad_norm = False, None
        if success:
            self.scheduler.step(1)
        else:
            logger.warning("non-finite loss or gradient (loss=%s): optimizer step skipped", metrics["loss"])
        metrics.update(
            grad_norm=float(grad_norm) if success else math.nan, lr=float(lr), skipped=0.0 if success else 1.0
        )
        return metrics

    def _train_micro_loss(
        self, loss_fn: LossFn, temperature: float, micro: dict[str, torch.Tensor], output: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        outputs = self._per_token_outputs(output, micro, temperature)
        loss, metrics = loss_fn(outputs, micro)
        # Cloned: the schedule divides the returned loss in place by the number of micro-batches.
        reported = {"loss": loss.detach().clone().float()}
        reported.update(
            {name: torch.as_tensor(value).detach().clone().float() for name, value in metrics.items()}
        )
        return loss, reported

    # ---- inference ------------------------------------------------------------------------------

    @torch.no_grad()
    def compute_log_probs(
        self, batch, temperature: float = 1.0, return_entropy: bool = True
    ) -> dict[str, torch.Tensor]:
        """Per-token log-probs (and entropy) of `batch["input_ids"]`: (B, S) fp32 CPU tensors aligned
        with the tokens (column 0 and padding are 0), identical on every rank of the replica."""
        if self.is_critic:
            raise RuntimeError("compute_log_probs on a critic (is_critic=True); use compute_values")
        names = ["log_probs", "entropy"] if return_entropy else ["log_probs"]
        return self._forward_only(batch, partial(self._collect_micro, temperature, names), names)

    @torch.no_grad()
    def compute_values(self, batch) -> dict[str, torch.Tensor]:
        """Critic values V(prefix before token i) as {"values": (B, S)} fp32, column 0 and padding 0."""
        if not self.is_critic:
            raise RuntimeError("compute_values needs a critic strategy (is_critic=True)")
        return self._forward_only(batch, partial(self._collect_micro, 1.0, ["values"]), ["values"])

    def _forward_only(self, batch, micro_fn: Callable, names: list[str]) -> dict[str, torch.Tensor]:
        for chunk in self.model:
            chunk.eval()
        tensors = batch_tensors(batch)
        micros, micro_batch_size, width = self._micro_batches(tensors, None)
        store = self._run(micros, micro_fn, micro_batch_size, width, forward_only=True)
        batch_size, seq_len = tensors["input_ids"].shape
        device = current_device()
        results = {}
        for name in names:
            if parallel_state.is_pipeline_last_stage(ignore_virtual=True):
                value = pad_to_width(torch.cat([item[name] for item in store]), seq_len).contiguous()
            else:
                value = torch.zeros(batch_size, seq_len, dtype=torch.float32, device=device)
            dist.broadcast(
                value,
                src=parallel_state.get_pipeline_model_parallel_last_rank(),
                group=parallel_state.get_pipeline_model_parallel_group(),
            )
            results[name] = value.cpu()
        if "attention_mask" in tensors:
            results = {
                name: value * tensors["attention_mask"].to(value.dtype) for name, value in results.items()
            }
        return results

    def _collect_micro(
        self, temperature: float, names: list[str], micro: dict[str, torch.Tensor], output: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        outputs = self._per_token_outputs(output, micro, temperature)
        # The schedules treat the first element as a loss and rescale it in place: hand them a dummy.
        return torch.zeros((), device=output.device), {name: outputs[name].float() for name in names}

    # ---- shared forward -------------------------------------------------------------------------

    def _per_token_outputs(
        self, output: torch.Tensor, micro: dict[str, torch.Tensor], temperature: float
    ) -> dict[str, torch.Tensor]:
        """Token-aligned (b, w) outputs from the last stage's output: logits shard or values."""
        if self.is_critic:
            return {"values": align_to_tokens(output[:, :-1].float())}
        tp_group = (
            parallel_state.get_tensor_model_parallel_group()
            if self.worker_config.tensor_parallel > 1
            else None
        )
        logits = mask_padded_vocab(
            output[:, :-1], self.hf_config["vocab_size"], parallel_state.get_tensor_model_parallel_rank()
        )
        log_probs, entropy = logprobs_from_logits(
            logits, micro["input_ids"][:, 1:], temperature, return_entropy=True, tp_group=tp_group
        )
        return {"log_probs": align_to_tokens(log_probs), "entropy": align_to_tokens(entropy)}

    def _micro_batches(
        self, tensors: dict[str, torch.Tensor], num_micro_batches: Optional[int]
    ) -> tuple[list[dict[str, torch.Tensor]], int, int]:
        """(micro-batches on the device, micro-batch size, trimmed width) of `tensors`."""
        cfg = self.worker_config
        batch_size = tensors["input_ids"].shape[0]
        micro_batch_size = cfg.micro_batch_size
        if num_micro_batches is not None:
            if num_micro_batches < 1 or batch_size % num_micro_batches:
                raise ValueError(
                    f"num_micro_batches={num_micro_batches} must be >= 1 and divide the batch size {batch_size}"
                )
            micro_batch_size = batch_size // num_micro_batches
        width = trimmed_width(tensors, cfg.tensor_parallel if cfg.sequence_parallel else 1)
        micros = split_micro_batches(tensors, micro_batch_size, width, current_device())
        if cfg.virtual_pipeline_parallel and len(micros) % cfg.pipeline_parallel:
            raise ValueError(
                f"interleaved pipeline (virtual_pipeline_parallel={cfg.virtual_pipeline_parallel}) needs the number "
                f"of micro-batches ({len(micros)}) to be a multiple of pipeline_parallel={cfg.pipeline_parallel}; "
                "change the batch size or micro_batch_size"
            )
        return micros, micro_batch_size, width

    def _run(
        self,
        micros: list[dict[str, torch.Tensor]],
        micro_fn: Callable,
        micro_batch_size: int,
        width: int,
        forward_only: bool,
    ) -> list[dict[str, torch.Tensor]]:
        """Run the pipeline schedule over `micros`; returns the last stage's per-micro-batch dicts
        (empty on other stages)."""
        forward_step = partial(self._forward_step, micro_fn)
        store = get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=[iter(micros) for _ in self.model],
            model=self.model,
            num_microbatches=len(micros),
            seq_length=width,
            micro_batch_size=micro_batch_size,
            forward_only=forward_only,
        )
        return store

    @staticmethod
    def _forward_step(micro_fn: Callable, data_iterator, model: torch.nn.Module):
        micro = next(data_iterator)
        # Right-padded causal batches need no attention mask: pads only ever follow real tokens.
        output = model(input_ids=micro["input_ids"], position_ids=micro["position_ids"], attention_mask=None)
        return output, partial(micro_fn, micro)

    def _reduce_metrics(self, store: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Mean over micro-batches and DP ranks on the last stage, then shared with all PP stages."""
        payload: Optional[dict[str, float]] = None
        if parallel_state.is_pipeline_last_stage(ignore_virtual=True):
            names = sorted(store[0])
            values = torch.stack(
                [torch.stack([item[name].float().reshape(()) for name in names]) for item in store]
            )
            values = values.mean(dim=0).to(current_device())
            dist.all_reduce(values, group=parallel_state.get_data_parallel_group())
            values /= parallel_state.get_data_parallel_world_size()
            payload = dict(zip(names, values.tolist()))
        shared = [payload]
        dist.broadcast_object_list(
            shared,
            src=parallel_state.get_pipeline_model_parallel_last_rank(),
            group=parallel_state.get_pipeline_model_parallel_group(),
        )
        assert shared[0] is not None, "the last pipeline stage broadcasts its metrics"
        return shared[0]

    # ---- checkpoints and weights ----------------------------------------------------------------

    def save_checkpoint(self, directory: str | Path, step: int, extra: Optional[dict] = None) -> None:
        """Save model, optimizer, LR schedule, RNG, `step` and `extra` into `directory`, one file per rank."""
        megatron_checkpoint.save(self, Path(directory), step, extra or {})

    def load_checkpoint(self, directory: str | Path) -> tuple[int, dict]:
        """Restore what `save_checkpoint` wrote (same parallel layout); returns (step, extra)."""
        return megatron_checkpoint.load(self, Path(directory))

    def parallel_info(self) -> dict[str, Any]:
        """This rank's place in the layout: dp/tp/pp ranks and sizes; `is_output` marks the one rank
        per DP replica (TP rank 0 of the last PP stage) whose results the driver collects."""
        tp_rank = parallel_state.get_tensor_model_parallel_rank()
        pp_rank = parallel_state.get_pipeline_model_parallel_rank()
        pp_size = parallel_state.get_pipeline_model_parallel_world_size()
        return {
            "dp_rank": parallel_state.get_data_parallel_rank(),
            "dp_size": parallel_state.get_data_parallel_world_size(),
            "tp_rank": tp_rank,
            "pp_rank": pp_rank,
            "is_output": tp_rank == 0 and pp_rank == pp_size - 1,
        }

    def iter_hf_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(hf_name, full tensor) pairs of this PP stage's weights; a collective over the TP group."""
        return iter_megatron_as_hf(self.modules(), self.hf_config)

    def export_hf(self, directory: str | Path) -> None:
        """Write the current weights as an HF checkpoint into `directory` (collective over all ranks);
        tokenizer files are copied from worker_config.model_path."""
        save_hf_checkpoint(
            self.modules(), self.hf_config, directory, source_dir=self.worker_config.model_path
        )
