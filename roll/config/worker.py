"""Per-role worker configuration: model, strategy, parallel sizes, batching, optimizer, devices.

One `WorkerConfig` per role (actor_train, actor_infer, reference, critic). A component receives
its own `WorkerConfig`, never the root config. Cross-role checks live in `validate.py`.
"""

from dataclasses import dataclass, field
from typing import Any, Optional

from roll.config.device_mapping import parse_device_mapping
from roll.config.errors import ConfigError


@dataclass(kw_only=True)
class OptimizerConfig:
    """Adam(W) optimizer and learning-rate schedule of a trainable role."""

    lr: float = 1e-6
    """Peak learning rate."""
    min_lr: float = 0.0
    """Floor of the cosine schedule."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW)."""
    adam_beta1: float = 0.9
    """Adam beta1."""
    adam_beta2: float = 0.999
    """Adam beta2."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    warmup_steps: int = 0
    """Linear warm-up steps (optimizer steps)."""
    lr_schedule: str = "constant"
    """After warm-up: "constant" | "cosine" | "linear"."""
    grad_clip: float = 1.0
    """Clip the global grad norm to this value; 0 disables clipping."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optimizer.lr={self.lr} must be > 0; set e.g. optimizer.lr=1e-6")
        if self.min_lr < 0 or self.min_lr > self.lr:
            raise ConfigError(
                f"optimizer.min_lr={self.min_lr} must be in [0, lr={self.lr}]; lower optimizer.min_lr"
            )
        if self.lr_schedule not in ("constant", "cosine", "linear"):
            raise ConfigError(
                f"optimizer.lr_schedule={self.lr_schedule!r} is not one of constant|cosine|linear"
            )
        if self.warmup_steps < 0:
            raise ConfigError(f"optimizer.warmup_steps={self.warmup_steps} must be >= 0")
        if self.grad_clip < 0:
            raise ConfigError(f"optimizer.grad_clip={self.grad_clip} must be >= 0 (0 disables clipping)")
        if not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1):
            raise ConfigError(
                f"optimizer.adam_beta1={self.adam_beta1}, adam_beta2={self.adam_beta2} must be in [0, 1)"
            )


@dataclass(kw_only=True)
class StrategyConfig:
    """Which backend runs the role and its backend-specific arguments."""

    name: str = "megatron_train"
    """Registry name: "megatron_train" (train/reference/critic), "native" or "sglang" (rollout)."""
    args: dict[str, Any] = field(default_factory=dict)
    """Backend-specific keyword arguments passed through unchanged (e.g. sglang mem_fraction_static)."""


@dataclass(kw_only=True)
class WorkerConfig:
    """One role: model, strategy, parallel layout, micro-batching, optimizer and devices."""

    model_path: str = ""
    """HF model directory (config.json + safetensors) the role loads."""
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    """Backend that runs this role."""
    tensor_parallel: int = 1
    """Tensor-parallel size (TP)."""
    pipeline_parallel: int = 1
    """Pipeline-parallel size (PP)."""
    virtual_pipeline_parallel: Optional[int] = None
    """Virtual pipeline stages per PP rank (interleaved 1F1B); None disables."""
    context_parallel: int = 1
    """Context-parallel size (CP)."""
    expert_parallel: int = 1
    """Expert-parallel size (EP, MoE models)."""
    sequence_parallel: bool = False
    """Megatron sequence parallelism (needs tensor_parallel > 1)."""
    micro_batch_size: int = 1
    """Samples per micro-batch per data-parallel rank (forward/backward granularity)."""
    device_mapping: list[int] = field(default_factory=lambda: [0])
    """Devices (GPU ids on clusters, CPU slots locally) of this role: ints or range strings like "0-7"."""
    optimizer: Optional[OptimizerConfig] = None
    """Optimizer of a trainable role; None for frozen roles (reference) and inference."""
    dtype: str = "auto"
    """Parameter/compute dtype: "auto" (bf16 on GPU, fp32 on CPU) | "bf16" | "fp16" | "fp32"."""
    recompute: bool = False
    """Activation recomputation (full, per layer) to save memory."""
    checkpoint_dir: Optional[str] = None
    """Megatron checkpoint directory to load instead of model_path (resume/export)."""

    def __post_init__(self) -> None:
        if isinstance(self.strategy, dict):
            self.strategy = StrategyConfig(**self.strategy)
        if isinstance(self.optimizer, dict):
            self.optimizer = OptimizerConfig(**self.optimizer)
        self.device_mapping = parse_device_mapping(self.device_mapping, field_name="device_mapping")
        for name in ("tensor_parallel", "pipeline_parallel", "context_parallel", "expert_parallel"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} must be an integer >= 1")
        if self.virtual_pipeline_parallel is not None:
            if self.virtual_pipeline_parallel < 1:
                raise ConfigError(
                    f"virtual_pipeline_parallel={self.virtual_pipeline_parallel} must be >= 1 or null"
                )
            if self.pipeline_parallel < 2 and self.virtual_pipeline_parallel > 1:
                raise ConfigError(
                    f"virtual_pipeline_parallel={self.virtual_pipeline_parallel} needs pipeline_parallel >= 2 "
                    f"(got {self.pipeline_parallel}); set virtual_pipeline_parallel=null"
                )
        if self.sequence_parallel and self.tensor_parallel < 2:
            raise ConfigError(
                "sequence_parallel=true needs tensor_parallel >= 2 "
                f"(got {self.tensor_parallel}); set sequence_parallel=false"
            )
        if self.micro_batch_size < 1:
            raise ConfigError(f"micro_batch_size={self.micro_batch_size} must be >= 1")
        if self.dtype not in ("auto", "bf16", "fp16", "fp32"):
            raise ConfigError(f"dtype={self.dtype!r} is not one of auto|bf16|fp16|fp32")

    @property
    def world_size(self) -> int:
        """Number of devices (= worker processes) of this role."""
        return len(self.device_mapping)

    @property
    def model_parallel_size(self) -> int:
        """TP x PP x CP: devices holding one model replica."""
        return self.tensor_parallel * self.pipeline_parallel * self.context_parallel

    @property
    def data_parallel(self) -> int:
        """Data-parallel size = world size / (TP x PP x CP)."""
        return self.world_size // self.model_parallel_size
