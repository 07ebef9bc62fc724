"""Sequence packing for packed (varlen) training: first-fit-decreasing of sequences into bins of
at most `max_tokens`, and the `cu_seqlens` / `position_ids` of one packed bin.

`pack_sequences` runs the C++ version in `roll._C` (csrc/packing.cpp) and falls back to
`first_fit_decreasing_reference`, the same algorithm in pure Python with identical results.
"""

from collections.abc import Sequence

import numpy as np
import torch

from roll.ops._extension import cpu_extension, log_fallback


def first_fit_decreasing_reference(sizes: Sequence[float], capacity: float) -> list[list[int]]:
    """Pure-Python FFD, step for step csrc/packing.cpp (descending sizes, ties by lower index)."""
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    bins: list[list[int]] = []
    remaining: list[float] = []
    for i in order:
        slot = next((b for b, room in enumerate(remaining) if room >= sizes[i]), len(bins))
        if slot == len(bins):
            bins.append([])
            remaining.append(capacity)
        remaining[slot] -= sizes[i]
        bins[slot].append(i)
    return [sorted(items) for items in bins]


def first_fit_decreasing(sizes: np.ndarray, capacity: float) -> list[list[int]]:
    """FFD of float64 `sizes` (each <= capacity, checked by the callers) into bins of `capacity`."""
    extension = cpu_extension()
    if extension is not None:
        return extension.first_fit_decreasing(sizes, float(capacity))
    log_fallback("first_fit_decreasing", "roll._C")
    return first_fit_decreasing_reference(sizes.tolist(), float(capacity))


def pack_sequences(seq_lens: Sequence[int] | np.ndarray | torch.Tensor, max_tokens: int) -> list[list[int]]:
    """Group sequence indices into bins of at most `max_tokens` tokens (first-fit-decreasing).

    Bins are in opening order (the first holds the longest sequence); indices ascend in a bin.
    """
    if isinstance(seq_lens, torch.Tensor):
        seq_lens = seq_lens.detach().cpu().numpy()
    lengths = np.asarray(seq_lens, dtype=np.int64).reshape(-1)
    if max_tokens < 1:
        raise ValueError(f"pack_sequences: max_tokens must be >= 1, got {max_tokens}")
    if lengths.size == 0:
        return []
    if lengths.min() < 0:
        raise ValueError(f"pack_sequences: sequence lengths must be >= 0, got {int(lengths.min())}")
    if lengths.max() > max_tokens:
        index = int(lengths.argmax())
        raise ValueError(
            f"pack_sequences: sequence {index} has {int(lengths[index])} tokens > max_tokens "
            f"({max_tokens}); raise max_tokens or truncate the sequence"
        )
    return first_fit_decreasing(lengths.astype(np.float64), float(max_tokens))


def packed_metadata(seq_lens_in_bin: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For sequences concatenated into one bin: `cu_seqlens` (n + 1,) int32, the start offsets
    plus the total (the flash-attention varlen convention), and `position_ids` (total,) int64,
    restarting at 0 for every sequence."""
    lengths = torch.as_tensor(seq_lens_in_bin, dtype=torch.int64).reshape(-1)
    if lengths.numel() and int(lengths.min()) < 0:
        raise ValueError(f"packed_metadata: sequence lengths must be >= 0, got {int(lengths.min())}")
    cu_seqlens = torch.zeros(lengths.numel() + 1, dtype=torch.int64)
    torch.cumsum(lengths, dim=0, out=cu_seqlens[1:])
    total = int(cu_seqlens[-1])
    starts = torch.repeat_interleave(cu_seqlens[:-1], lengths, output_size=total)
    position_ids = torch.arange(total, dtype=torch.int64) - starts
    return cu_seqlens.to(torch.int32), position_ids
