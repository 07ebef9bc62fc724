"""Registry of rollout engines by strategy name: the one place engine classes are looked up.

`native` runs anywhere (plain torch); `sglang` needs a GPU and the `gpu` extra installed.
"""

from collections.abc import Callable

from roll.config.worker import WorkerConfig
from roll.strategies.engine import RolloutEngine


def _native(config: WorkerConfig, seed: int) -> RolloutEngine:
    import torch

    from roll.platform import current_device
    from roll.strategies.native_engine import NativeEngine

    dtype = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[config.dtype]
    device = current_device()
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return NativeEngine(config.model_path, device=str(device), dtype=dtype, seed=seed, **config.strategy.args)


def _sglang(config: WorkerConfig, seed: int) -> RolloutEngine:
    try:
        from roll.strategies.sglang_engine import SGLangEngine
    except ImportError as err:
        raise RuntimeError(
            f"actor_infer.strategy.name=sglang but the SGLang engine cannot be imported ({err}); "
            "install the gpu extra on a GPU machine or use strategy.name=native"
        ) from err
    return SGLangEngine(config, seed=seed)


ROLLOUT_ENGINES: dict[str, Callable[[WorkerConfig, int], RolloutEngine]] = {
    "native": _native,
    "sglang": _sglang,
}


def build_rollout_engine(config: WorkerConfig, *, seed: int) -> RolloutEngine:
    """Instantiate the engine named by `config.strategy.name`."""
    name = config.strategy.name
    if name not in ROLLOUT_ENGINES:
        raise ValueError(f"actor_infer.strategy.name={name!r} is not one of {'|'.join(ROLLOUT_ENGINES)}")
    return ROLLOUT_ENGINES[name](config, seed)
