"""roll.platform: device detection, init_distributed input errors, the CPU device mode, and the
megatron CPU layer (in a subprocess, since it patches torch.cuda for the whole process)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from roll.platform import current_device, get_device_type, init_distributed
from roll.platform.cpu_megatron import _CpuDeviceMode

ROOT = Path(__file__).resolve().parents[2]
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path")


@cpu_only
def test_cpu_machine_reports_cpu():
    assert get_device_type() == "cpu"
    assert current_device() == torch.device("cpu")


def test_init_distributed_names_missing_env_vars(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match=r"\['RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'\]"):
        init_distributed()


def test_cpu_device_mode_maps_cuda_to_cpu():
    with _CpuDeviceMode():
        assert torch.zeros(2, device="cuda").device.type == "cpu"
        assert torch.ones(1, device=torch.device("cuda", 0)).device.type == "cpu"
        x = torch.ones(3)
        assert x.cuda() is x
        assert x.to("cuda").device.type == "cpu"
        assert x.type() == "torch.FloatTensor"
    with _CpuDeviceMode(cuda_type_names=True):
        assert torch.ones(1).type() == "torch.cuda.FloatTensor"
        assert torch.ones(1, dtype=torch.bfloat16).type() == "torch.cuda.BFloat16Tensor"
        assert torch.ones(1, dtype=torch.int64).type() == "torch.LongTensor"


_PATCHED_PROCESS = """
import torch
from roll.platform import apply_cpu_megatron_patches

assert apply_cpu_megatron_patches() and apply_cpu_megatron_patches()
# Imported after the patches, as megatron's own call sites resolve them at call time.
from megatron.core.pipeline_parallel import schedules
from megatron.core.tensor_parallel import get_cuda_rng_tracker, model_parallel_cuda_manual_seed
from megatron.core.transformer.utils import get_default_causal_mask

wrapped = schedules.forward_backward_no_pipelining
assert wrapped.__roll_cpu_wrapped__ and not getattr(wrapped.__wrapped__, "__roll_cpu_wrapped__", False)

# The "CUDA" RNG is the CPU generator: the tracker's model-parallel stream is seeded with
# seed + 2718 + tp_rank, the default stream with the seed itself (megatron's rule).
model_parallel_cuda_manual_seed(123, tp_rank=0, ep_rank=0, etp_rank=0)
with get_cuda_rng_tracker().fork():
    inside = torch.randn(4)
after = torch.randn(4)
assert torch.equal(inside, torch.randn(4, generator=torch.Generator().manual_seed(123 + 2718)))
assert torch.equal(after, torch.randn(4, generator=torch.Generator().manual_seed(123)))

assert torch.equal(get_default_causal_mask(3), torch.ones(3, 3).triu(1).bool())
torch.cuda.synchronize()
torch.cuda.current_stream().wait_stream(torch.cuda.Stream())
assert torch.empty(1, device=torch.cuda.current_device()).device.type == "cpu"
print("OK")
"""


@cpu_only
def test_cpu_megatron_patches_in_a_fresh_process():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", _PATCHED_PROCESS], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-3000:]
