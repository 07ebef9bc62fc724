"""roll.ops.packing: first-fit-decreasing bins checked against the first-fit invariant and a hand
worked example, C++ against the pure-Python twin, and the packed metadata against plain loops."""

import importlib.util

import numpy as np
import pytest
import torch

from roll.ops import pack_sequences, packed_metadata
from roll.ops.packing import first_fit_decreasing_reference

requires_extension = pytest.mark.skipif(
    importlib.util.find_spec("roll._C") is None, reason="roll._C is not built"
)


def test_hand_worked_example():
    # Descending: 8 -> bin 0, 7 -> bin 1, 5 -> bin 2, 3 -> bin 1 (7 + 3 = 10), 2 -> bin 0.
    assert pack_sequences([5, 3, 7, 2, 8], max_tokens=10) == [[3, 4], [1, 2], [0]]


def test_bins_fit_and_satisfy_the_first_fit_invariant():
    rng = np.random.default_rng(0)
    for _ in range(20):
        lengths = rng.integers(1, 1000, size=int(rng.integers(1, 300)))
        bins = pack_sequences(lengths, max_tokens=1024)
        assert sorted(i for items in bins for i in items) == list(range(len(lengths)))
        loads = [int(lengths[items].sum()) for items in bins]
        assert max(loads) <= 1024
        # Loads only grow, so an item placed in a later bin cannot fit in any earlier final bin.
        for later, items in enumerate(bins):
            for earlier in range(later):
                assert loads[earlier] + int(lengths[items].min()) > 1024


@requires_extension
def test_cpp_matches_python_reference():
    rng = np.random.default_rng(1)
    for trial in range(10):
        lengths = rng.integers(1, 50 if trial % 2 else 4000, size=500)
        assert pack_sequences(lengths, 4096) == first_fit_decreasing_reference(lengths.tolist(), 4096)


def test_accepts_tensors_and_empty_input():
    assert pack_sequences(torch.tensor([4, 4, 4]), max_tokens=8) == [[0, 1], [2]]
    assert pack_sequences([], max_tokens=8) == []


def test_sequence_over_max_tokens_is_rejected():
    with pytest.raises(ValueError, match=r"sequence 1 has 12 tokens > max_tokens \(10\)"):
        pack_sequences([3, 12, 4], max_tokens=10)


def test_packed_metadata_matches_plain_loops():
    lengths = [3, 1, 4, 0, 2]
    cu_seqlens, position_ids = packed_metadata(lengths)
    expected_cu, expected_pos = [0], []
    for length in lengths:
        expected_cu.append(expected_cu[-1] + length)
        expected_pos.extend(range(length))
    assert cu_seqlens.dtype == torch.int32 and cu_seqlens.tolist() == expected_cu
    assert position_ids.dtype == torch.int64 and position_ids.tolist() == expected_pos
