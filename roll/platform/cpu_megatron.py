"""The CPU layer that lets megatron-core 0.16 run on gloo without a GPU.

megatron-core assumes CUDA in a handful of places (measured, see DESIGN.md "Facts measured"):
  1. `torch.cuda` RNG/stream/device calls: the RNG tracker (`manual_seed`, `get_rng_state`,
     `set_rng_state`, megatron's own `_set_cuda_rng_state`), RoPE `inv_freq.to(current_device())`,
     GlobalMemoryBuffer and P2P buffers (`current_device`), P2P `synchronize`, DDP/offload
     `Stream`/`Event`/`current_stream`, `empty_cache`.
     -> replaced by CPU equivalents: the "CUDA" RNG is the CPU default generator, the current device
        is "cpu", streams/events are no-op objects.
  2. `device="cuda"` literals and `.cuda()` calls inside the pipeline schedules, grad clipping,
     the optimizers, the default causal masks of the local attention, `tensor_parallel.broadcast_data`
     and the tied-embedding sync of `LanguageModule` (PP>1), plus the optimizers' `param.type() == 'torch.cuda.FloatTensor'`
     checks.
     -> those functions run under `_CpuDeviceMode`, a TorchFunctionMode that maps CUDA devices to the
        CPU, makes `.cuda()` the identity and, inside the optimizers' methods only (construction,
        grad clipping), reports CPU float tensor types under their CUDA names.
`WrappedTorchNorm` refusing sequence parallelism is a layer-spec matter: roll.models uses its own
norm (see roll/models/megatron_builder.py).

`apply_cpu_megatron_patches()` applies all of this once per process and does nothing when CUDA is
available. Module-level functions are rebound, and megatron's own callers look them up at call time
(`get_forward_backward_func`, class methods); code that binds one by name (`from ...schedules import
forward_backward_no_pipelining`) before the patches are applied keeps the unpatched function, so
use those entry points, or import after `roll.platform.init_distributed()`.
"""

import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from roll.utils.logging import get_logger

logger = get_logger(__name__)

_APPLIED = False

_CUDA_TYPE_NAMES = {
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
}


def _is_cuda_device(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    # A bare int means "cuda:<int>" to torch factory functions.
    return isinstance(device, int) and not isinstance(device, bool)


class _CpuDeviceMode(TorchFunctionMode):
    """Map CUDA device arguments to the CPU; optionally report CPU tensor types under CUDA names."""

    def __init__(self, cuda_type_names: bool = False) -> None:
        super().__init__()
        self.cuda_type_names = cuda_type_names

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            return args[0]
        if self.cuda_type_names and func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            return _CUDA_TYPE_NAMES.get(name, name)
        if _is_cuda_device(kwargs.get("device")):
            kwargs = {**kwargs, "device": "cpu"}
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda_device(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


def _run_on_cpu(fn: Callable, cuda_type_names: bool = False) -> Callable:
    """Wrap `fn` so that it runs under `_CpuDeviceMode`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _CpuDeviceMode(cuda_type_names=cuda_type_names):
            return fn(*args, **kwargs)

    wrapper.__roll_cpu_wrapped__ = True  # type: ignore[attr-defined]
    return wrapper


def _wrap_attr(owner: Any, name: str, cuda_type_names: bool = False) -> None:
    fn = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    if getattr(fn, "__roll_cpu_wrapped__", False):
        return
    setattr(owner, name, _run_on_cpu(fn, cuda_type_names))


class _NoOpStream:
    """Stands in for torch.cuda.Stream/Event: work on the CPU is already ordered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None

    def __enter__(self) -> "_NoOpStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def _patch_torch_cuda() -> None:
    """Item 1: the CUDA RNG is the CPU default generator; device/stream calls become CPU no-ops."""
    import megatron.core.tensor_parallel.random as mcore_random

    def manual_seed(seed: int) -> None:
        # The CPU generator itself: torch.manual_seed would call torch.cuda.manual_seed_all again.
        torch.default_generator.manual_seed(int(seed))

    def get_rng_state(device: Any = "cuda") -> torch.Tensor:
        return torch.get_rng_state()

    def set_rng_state(new_state: torch.Tensor, device: Any = "cuda", graph_safe: bool = False) -> None:
        torch.set_rng_state(new_state)

    # Typed as Any: the CPU stand-ins deliberately differ from torch.cuda's signatures and types.
    cuda: Any = torch.cuda
    for module in (cuda, cuda.random):
        module.manual_seed = manual_seed
        module.manual_seed_all = manual_seed
        module.get_rng_state = get_rng_state
        module.set_rng_state = set_rng_state
    cuda.current_device = lambda: "cpu"
    cuda.synchronize = lambda device=None: None
    cuda.empty_cache = lambda: None
    cuda.Stream = _NoOpStream
    cuda.Event = _NoOpStream
    cuda.current_stream = lambda device=None: _NoOpStream()
    cuda.default_stream = lambda device=None: _NoOpStream()
    cuda.stream = lambda stream=None: contextlib.nullcontext()
    mcore_random._set_cuda_rng_state = set_rng_state
    # The tracker warns when the CPU RNG moves inside a fork; here the "CUDA" RNG is the CPU RNG,
    # so every random op inside a fork would warn although the fork restores the state correctly.
    logging.getLogger(mcore_random.__name__).addFilter(
        lambda record: "CPU RNG state changed within GPU RNG context" not in record.getMessage()
    )


def _patch_cuda_literals() -> None:
    """Item 2: run the megatron functions that hard-code CUDA tensors under `_CpuDeviceMode`."""
    import megatron.core.fusions.fused_softmax as fused_softmax
    import megatron.core.optimizer.distrib_optimizer as distrib_optimizer
    import megatron.core.optimizer.optimizer as optimizer
    import megatron.core.pipeline_parallel.schedules as schedules
    import megatron.core.tensor_parallel as tensor_parallel
    import megatron.core.tensor_parallel.data as tensor_parallel_data
    import megatron.core.transformer.utils as transformer_utils
    from megatron.core.models.common.language_module.language_module import LanguageModule

    for name in (
        "forward_backward_no_pipelining",
        "forward_backward_pipelining_with_interleaving",
        "forward_backward_pipelining_without_interleaving",
    ):
        _wrap_attr(schedules, name)
    _wrap_attr(LanguageModule, "setup_embeddings_and_output_layer")
    for module in (tensor_parallel_data, tensor_parallel):
        _wrap_attr(module, "broadcast_data")
    for module in (transformer_utils, fused_softmax):
        _wrap_attr(module, "get_default_causal_mask")
        _wrap_attr(module, "get_sliding_window_causal_mask")
    optimizer_classes = (
        optimizer.MegatronOptimizer,
        optimizer.MixedPrecisionOptimizer,
        optimizer.Float16OptimizerWithFloat16Params,
        optimizer.FP32Optimizer,
        optimizer.ChainedOptimizer,
        distrib_optimizer.DistributedOptimizer,
    )
    methods = (
        "step",
        "prepare_grads",
        "step_with_ready_grads",
        "get_grad_norm",
        "clip_grad_norm",
        "count_zeros",
        "restore_from_cpu",
        "get_parameter_state_dp_zero",
    )
    for cls in optimizer_classes:
        for name in ("__init__", *methods):
            if name in cls.__dict__:
                _wrap_attr(cls, name, cuda_type_names=True)


def apply_cpu_megatron_patches() -> bool:
    """Make megatron-core run on the CPU; idempotent. Returns True when the patches are active.

    Does nothing (returns False) when CUDA is available: the GPU path runs megatron unmodified.
    """
    global _APPLIED
    if torch.cuda.is_available():
        return False
    if not _APPLIED:
        _patch_torch_cuda()
        _patch_cuda_literals()
        _APPLIED = True
        logger.debug("CPU megatron patches applied")
    return True


def cpu_megatron_patches_applied() -> bool:
    """Whether this process runs megatron through the CPU layer."""
    return _APPLIED
