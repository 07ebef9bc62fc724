"""Micro-batching for the Megatron strategy: trim trailing padding, split into equal micro-batches,
add the whole mini-batch's loss denominators, and put per-token model outputs back into the (B, S)
layout of the caller's batch.

Batches are right-padded (COMMON conventions), so the columns after the longest real sequence carry
no information for a causal model: the strategy runs the model on the trimmed width and pads the
outputs back with zeros.
"""

from collections.abc import Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F

from roll.algorithms.loss_fns import GLOBAL_HORIZON, GLOBAL_SEQ_COUNT, GLOBAL_TOKEN_COUNT, LOSS_SCALE


def batch_tensors(batch) -> dict[str, torch.Tensor]:
    """The tensor dict of a `roll.distributed.batch.Batch` or of a plain mapping of tensors."""
    tensors = getattr(batch, "tensors", batch)
    if not isinstance(tensors, Mapping) or "input_ids" not in tensors:
        raise ValueError(
            f"batch must be a Batch or a dict of tensors with 'input_ids' (B, S); got {type(batch).__name__}"
        )
    return dict(tensors)


def trimmed_width(tensors: Mapping[str, torch.Tensor], multiple: int = 1) -> int:
    """Width of the longest real sequence (from attention_mask), rounded up to `multiple`, at most S.

    Megatron's pipeline exchanges (seq, micro_batch, hidden) activations whose shape is fixed per
    call, so all micro-batches of one call share this width rather than each trimming its own.
    """
    seq_len = tensors["input_ids"].shape[1]
    mask = tensors.get("attention_mask")
    if mask is None:
        return seq_len
    longest = int(mask.sum(dim=1).max().item()) if mask.numel() else 1
    width = -(-max(longest, 1) // multiple) * multiple
    return min(width, seq_len)


def split_micro_batches(
    tensors: Mapping[str, torch.Tensor], micro_batch_size: int, width: int, device: torch.device
) -> list[dict[str, torch.Tensor]]:
    """Split (B, ...) tensors into B / micro_batch_size dicts; (B, S) tensors are cut to `width` columns.

    `position_ids` is added as arange(width) when the batch has none.
    """
    batch_size, seq_len = tensors["input_ids"].shape
    if batch_size % micro_batch_size:
        raise ValueError(
            f"batch size {batch_size} is not divisible by micro_batch_size={micro_batch_size}; "
            "pad the batch (Batch.pad_to_multiple) or change micro_batch_size"
        )
    trimmed: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            continue
        if value.dim() >= 2 and value.shape[:2] == (batch_size, seq_len):
            value = value[:, :width]
        trimmed[name] = value.to(device)
    if "position_ids" not in trimmed:
        positions = torch.arange(width, device=device)
        trimmed["position_ids"] = positions.unsqueeze(0).expand(batch_size, width)
    return [
        {name: value[start : start + micro_batch_size] for name, value in trimmed.items()}
        for start in range(0, batch_size, micro_batch_size)
    ]


def global_loss_keys(
    tensors: Mapping[str, torch.Tensor],
    num_micro_batches: int,
    dp_group: dist.ProcessGroup,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """The whole mini-batch's keys that make the loss fns (roll.algorithms.loss_fns) aggregate exactly.

    Response tokens and sequences with any response token of this DP rank's batch are summed over
    `dp_group`, the padded width is its maximum, and the loss scale is what the gradient is divided by
    later: Megatron's schedule by `num_micro_batches`, DDP's average by the DP size. A collective over
    `dp_group`; {} when the batch has no response_mask.
    """
    mask = tensors.get("response_mask")
    if mask is None:
        return {}
    # float64: float32 stops counting exactly past 2^24 tokens.
    row_tokens = mask.to(device=device, dtype=torch.float64).sum(-1)
    counts = torch.stack([row_tokens.sum(), (row_tokens > 0).sum().to(torch.float64)])
    dist.all_reduce(counts, group=dp_group)
    horizon = torch.tensor([float(mask.shape[1])], device=device)
    dist.all_reduce(horizon, op=dist.ReduceOp.MAX, group=dp_group)
    scale = num_micro_batches * dist.get_world_size(dp_group)
    return {
        GLOBAL_TOKEN_COUNT: counts[0].float(),
        GLOBAL_SEQ_COUNT: counts[1].float(),
        GLOBAL_HORIZON: horizon[0],
        LOSS_SCALE: torch.tensor(float(scale), device=device),
    }


def align_to_tokens(per_position: torch.Tensor) -> torch.Tensor:
    """Shift (b, s-1) values predicted from positions 0..s-2 onto tokens 1..s-1: column 0 becomes 0."""
    return F.pad(per_position, (1, 0))


def pad_to_width(per_token: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Right-pad (B, w) with zeros to (B, seq_len)."""
    return F.pad(per_token, (0, seq_len - per_token.shape[1]))


# Far below any real logit, yet finite after division by a small temperature in fp32 (an -inf
# would turn the entropy's p * log p into NaN); fp16 cannot hold it, so it uses its own minimum.
_PADDED_LOGIT = -1e9


def mask_padded_vocab(logits: torch.Tensor, vocab_size: int, tp_rank: int) -> torch.Tensor:
    """Push the logits of Megatron's vocab padding (global ids >= vocab_size) to a huge negative value.

    `logits` is this TP rank's shard (..., V_padded / tp) of a vocabulary split into equal,
    contiguous shards. Returns `logits` itself when the shard holds no padding.
    """
    shard = logits.shape[-1]
    first_padded = vocab_size - tp_rank * shard
    if first_padded >= shard:
        return logits
    padded = torch.arange(shard, device=logits.device) >= first_padded
    fill = max(_PADDED_LOGIT, torch.finfo(logits.dtype).min)
    return logits.masked_fill(padded, fill)
