"""The Python fallbacks of roll.ops: with the extension hidden, each op logs one line saying so and
returns what the compiled op returns."""

import importlib.util
import logging

import numpy as np
import pytest
import torch

from roll.ops import _extension, gae_scan, packing, partition

pytestmark = pytest.mark.skipif(importlib.util.find_spec("roll._C") is None, reason="roll._C is not built")


@pytest.fixture
def roll_log(caplog):
    # The `roll` logger does not propagate to the root logger that caplog listens on.
    logger = logging.getLogger("roll")
    logger.addHandler(caplog.handler)
    _extension.log_fallback.cache_clear()
    yield caplog
    logger.removeHandler(caplog.handler)
    _extension.log_fallback.cache_clear()


def test_fallbacks_match_the_extension_and_log_once(monkeypatch, roll_log):
    workloads = np.random.default_rng(0).integers(1, 5000, size=64).astype(np.float64)
    rewards, values = torch.randn(3, 20), torch.randn(3, 20)
    mask = (torch.rand(3, 20) > 0.3).float()
    compiled = (
        partition.balanced_partition(workloads, 4),
        packing.pack_sequences(workloads.astype(np.int64), 8000),
        gae_scan.gae(rewards, values, mask, 0.99, 0.95),
    )
    for module in (partition, packing, gae_scan):
        monkeypatch.setattr(module, "cpu_extension", lambda: None)
    for _ in range(2):
        assert partition.balanced_partition(workloads, 4) == compiled[0]
        assert packing.pack_sequences(workloads.astype(np.int64), 8000) == compiled[1]
        torch.testing.assert_close(gae_scan.gae(rewards, values, mask, 0.99, 0.95), compiled[2])
    fallback_lines = [
        r.getMessage() for r in roll_log.records if "using the Python fallback" in r.getMessage()
    ]
    assert len(fallback_lines) == 3
    assert all("roll._C unavailable" in line for line in fallback_lines)
