"""Helpers for multi-process Megatron tests: set up parallel_state, build + load a model, run a
forward-only pass through megatron's pipeline schedule and return full-vocab logits.

Used inside processes started by tests/distributed/launcher.py (gloo, CPU layer applied).
"""

from functools import partial
from pathlib import Path
from typing import Optional

import torch


def init_parallel(tp: int, pp: int, vpp: Optional[int] = None, seed: int = 0) -> None:
    """(Re)initialise megatron's model-parallel groups for this process."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        virtual_pipeline_model_parallel_size=vpp,
    )
    model_parallel_cuda_manual_seed(seed)


def build_loaded_model(
    hf_dir: Path,
    tp: int,
    pp: int,
    *,
    vpp: Optional[int] = None,
    sequence_parallel: bool = False,
    is_critic=False,
):
    """(hf_config, model chunks) of `hf_dir` under the current parallel layout, weights loaded."""
    from roll.models.convert import load_hf_into_megatron
    from roll.models.megatron_builder import build_model_chunks, build_transformer_config, load_hf_config

    hf_config = load_hf_config(hf_dir)
    config = build_transformer_config(
        hf_config,
        tensor_parallel=tp,
        pipeline_parallel=pp,
        virtual_pipeline_parallel=vpp,
        sequence_parallel=sequence_parallel,
    )
    chunks = build_model_chunks(hf_config, config, is_critic=is_critic)
    load_hf_into_megatron(chunks, hf_dir, hf_config)
    return hf_config, chunks


def forward_logits(chunks: list, input_ids: torch.Tensor, vocab_size: int) -> Optional[torch.Tensor]:
    """Forward-only through megatron's schedule; (B, S, vocab) logits on the last stage, else None.

    The interleaved (VPP) schedule needs at least PP micro-batches: the batch is then fed PP times.
    """
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    batch, seq = input_ids.shape
    position_ids = torch.arange(seq).expand(batch, seq)

    def loss_func(output: torch.Tensor, non_loss_data: bool = False):
        if output.dim() == 3:
            output = gather_from_tensor_model_parallel_region(output)[..., :vocab_size]
        return output.detach()

    def forward_step(data_iterator, model):
        ids = next(data_iterator)
        return model(ids, position_ids, None), partial(loss_func)

    for chunk in chunks:
        chunk.eval()
    num_microbatches = parallel_state.get_pipeline_model_parallel_world_size() if len(chunks) > 1 else 1
    data = [iter([input_ids] * num_microbatches) for _ in chunks] if len(chunks) > 1 else iter([input_ids])
    with torch.no_grad():
        outputs = get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=data,
            model=chunks if len(chunks) > 1 else chunks[0],
            num_microbatches=num_microbatches,
            seq_length=seq,
            micro_batch_size=batch,
            forward_only=True,
            collect_non_loss_data=True,
        )
    return outputs[0] if parallel_state.is_pipeline_last_stage() else None
