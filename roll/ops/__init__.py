"""Thin wrappers over ROLL's compiled ops (csrc/), each with a Python fallback used, with a
one-line log, when the extension is not built:

- `balanced_partition`, `partition_by_budget`, `sequence_workload`, `imbalance_ratio`:
  Karmarkar-Karp balancing of sequences across data-parallel ranks and micro-batches.
- `gae`: the GAE reverse scan over (B, T) (C++ on CPU, CUDA on GPU).
- `pack_sequences`, `packed_metadata`: first-fit-decreasing packing for varlen training.
- `group_stats`: per-group count / mean / std (CUDA on GPU).
"""

from roll.ops.gae_scan import gae
from roll.ops.packing import pack_sequences, packed_metadata
from roll.ops.partition import balanced_partition, imbalance_ratio, partition_by_budget, sequence_workload
from roll.ops.segmented_stats import group_stats

__all__ = [
    "balanced_partition",
    "gae",
    "group_stats",
    "imbalance_ratio",
    "pack_sequences",
    "packed_metadata",
    "partition_by_budget",
    "sequence_workload",
]
