"""The root config of a job: pipeline settings plus one sub-config per role and component.

`JobConfig` is the typed tree; YAML (see `loader.py`) is only its serialisation. Cross-field
checks that span several sub-configs live in `validate.py` and run before anything starts.
"""

from dataclasses import dataclass, field
from typing import Any, Optional

from roll.config.algorithm import AlgorithmConfig
from roll.config.cluster import ClusterConfig
from roll.config.environment import EnvironmentConfig
from roll.config.errors import ConfigError
from roll.config.generation import GenerationConfig
from roll.config.timeouts import TimeoutConfig
from roll.config.worker import WorkerConfig

PIPELINES = ("rlvr", "sft", "agentic")
WEIGHT_SYNC_TRANSPORTS = ("collective", "object_store")


@dataclass(kw_only=True)
class DataConfig:
    """Where prompts (RL) or demonstrations (SFT) come from and how they are tokenised."""

    train_path: str = ""
    """jsonl or parquet file of training rows."""
    val_path: Optional[str] = None
    """jsonl or parquet file of held-out rows; None disables validation."""
    prompt_key: str = "prompt"
    """Column holding the prompt text (or chat messages list)."""
    answer_key: str = "answer"
    """Column holding the reference answer passed to reward functions (RL)."""
    response_key: str = "completion"
    """Column holding the target completion (SFT)."""
    template: str = "plain"
    """Prompt template: "plain" (text as is) | "chat" (tokenizer chat template)."""
    tokenizer_path: Optional[str] = None
    """Tokenizer directory; None uses actor_train.model_path."""
    max_prompt_length: int = 256
    """Prompts longer than this (tokens) are skipped and counted."""
    max_length: int = 512
    """SFT: prompt + completion longer than this (tokens) are skipped and counted."""
    shuffle: bool = True
    """Shuffle training rows each epoch (seeded)."""

    def __post_init__(self) -> None:
        if self.template not in ("plain", "chat"):
            raise ConfigError(f"data.template={self.template!r} is not one of plain|chat")
        if self.max_prompt_length < 1 or self.max_length < 2:
            raise ConfigError(
                f"data.max_prompt_length={self.max_prompt_length} must be >= 1 and "
                f"data.max_length={self.max_length} >= 2"
            )


@dataclass(kw_only=True)
class RewardFunctionConfig:
    """One rule reward function from the registry, with its weight in the sum."""

    name: str = "math_exact"
    """Registry name, e.g. math_exact | countdown | format."""
    weight: float = 1.0
    """Weight of this function's score in the combined reward."""
    args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the reward function."""


@dataclass(kw_only=True)
class RewardConfig:
    """Reward role: rule functions (batched) run on CPU workers."""

    functions: list[RewardFunctionConfig] = field(default_factory=lambda: [RewardFunctionConfig()])
    """Reward functions whose weighted scores are summed."""
    timeout_s: float = 10.0
    """Per-sample time limit; a timed-out or failing function scores 0 and is counted."""
    num_workers: int = 1
    """Reward worker processes."""

    def __post_init__(self) -> None:
        self.functions = [
            RewardFunctionConfig(**f) if isinstance(f, dict) else f for f in (self.functions or [])
        ]
        if not self.functions:
            raise ConfigError("reward.functions is empty; add e.g. [{name: math_exact}]")
        if self.timeout_s <= 0:
            raise ConfigError(f"reward.timeout_s={self.timeout_s} must be > 0")
        if self.num_workers < 1:
            raise ConfigError(f"reward.num_workers={self.num_workers} must be >= 1")


@dataclass(kw_only=True)
class JobConfig:
    """Root of a ROLL job: which pipeline, its loop settings, and one sub-config per role."""

    pipeline: str = "rlvr"
    """Which pipeline runs: rlvr | sft | agentic (multi-turn episodes in environments)."""
    exp_name: str = "roll"
    """Experiment name (used in logs and the output directory)."""
    seed: int = 42
    """Global seed (data order, init, sampling)."""
    output_dir: str = "./outputs/roll"
    """Where metrics.jsonl, TensorBoard events and checkpoints go."""
    max_steps: int = 10
    """Pipeline steps (RL: rollout+update rounds; SFT: optimizer steps)."""
    rollout_batch_size: int = 8
    """RL: prompts (agentic: env seed groups) per step, each sampled generation.num_samples times."""
    train_batch_size: int = 8
    """SFT: samples per optimizer step (global batch)."""
    val_every: int = 0
    """Run validation every N steps (and before the first); 0 disables."""
    val_max_samples: int = 64
    """Validation prompts evaluated (greedy) each time (agentic: environment.val_episodes instead)."""
    save_every: int = 0
    """Save a checkpoint every N steps; 0 saves only at the end."""
    log_every: int = 1
    """Log metrics every N steps."""
    tensorboard: bool = True
    """Also write TensorBoard events under output_dir/tensorboard."""
    cluster: Optional[ClusterConfig] = None
    """GPU cluster shape (nodes, GPUs per node, GPU memory); enables placement checks at --validate."""
    ray_address: Optional[str] = None
    """Ray cluster address; None starts a local Ray on 127.0.0.1."""
    weight_sync_bucket_mb: float = 64.0
    """Bucket size (MiB) of actor_train -> actor_infer weight sync."""
    weight_sync_transport: str = "collective"
    """Weight sync transport: collective (process group, flat buckets) | object_store (Ray, fallback)."""
    weight_sync_timeout_s: float = 300.0
    """Time limit (s) of each collective weight-sync operation: a dead or stuck member fails the step."""
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    """Time limits of the driver's waits on role workers: a hung worker fails the step."""
    actor_train: WorkerConfig = field(default_factory=WorkerConfig)
    """The policy being trained (Megatron)."""
    actor_infer: WorkerConfig = field(
        default_factory=lambda: WorkerConfig(strategy={"name": "native"})  # type: ignore[arg-type]
    )
    """The rollout engine hosting the policy (native | sglang)."""
    reference: Optional[WorkerConfig] = None
    """Frozen reference policy for KL; None when algorithm.kl_coef == 0."""
    critic: Optional[WorkerConfig] = None
    """Value model (PPO/GAE); None otherwise."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Rule reward functions (rlvr; agentic rewards come from the environments)."""
    environment: Optional[EnvironmentConfig] = None
    """Environment role (pipeline=agentic): envs, tools, turn and context limits."""
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    """Sampling for training rollouts."""
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    """Advantages, losses, KL."""
    data: DataConfig = field(default_factory=DataConfig)
    """Datasets and tokenisation."""

    def __post_init__(self) -> None:
        # Built in code (not by the loader), sub-configs may arrive as plain dicts.
        for name, cls in _NESTED.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, cls(**value))
        if self.pipeline not in PIPELINES:
            raise ConfigError(f"pipeline={self.pipeline!r} is not one of {'|'.join(PIPELINES)}")
        for name in ("max_steps", "rollout_batch_size", "train_batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("val_every", "save_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0 (0 disables)")
        if self.weight_sync_bucket_mb <= 0:
            raise ConfigError(f"weight_sync_bucket_mb={self.weight_sync_bucket_mb} must be > 0")
        if self.weight_sync_transport not in WEIGHT_SYNC_TRANSPORTS:
            raise ConfigError(
                f"weight_sync_transport={self.weight_sync_transport!r} is not one of "
                f"{'|'.join(WEIGHT_SYNC_TRANSPORTS)}; collective is the default, object_store the fallback"
            )
        if not self.weight_sync_timeout_s > 0:
            raise ConfigError(
                f"weight_sync_timeout_s={self.weight_sync_timeout_s} must be > 0 (seconds, e.g. 300)"
            )


_NESTED = {
    "cluster": ClusterConfig,
    "timeouts": TimeoutConfig,
    "actor_train": WorkerConfig,
    "actor_infer": WorkerConfig,
    "reference": WorkerConfig,
    "critic": WorkerConfig,
    "reward": RewardConfig,
    "environment": EnvironmentConfig,
    "generation": GenerationConfig,
    "algorithm": AlgorithmConfig,
    "data": DataConfig,
}
