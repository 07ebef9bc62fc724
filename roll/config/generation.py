"""Sampling configuration of the rollout engine (native | sglang)."""

from dataclasses import dataclass, field

from roll.config.errors import ConfigError


@dataclass(kw_only=True)
class GenerationConfig:
    """How responses are sampled for each prompt."""

    num_samples: int = 1
    """Responses per prompt (n; the GRPO group size)."""
    temperature: float = 1.0
    """Sampling temperature; 0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass in (0, 1]."""
    top_k: int = -1
    """Keep the k most likely tokens; -1 disables."""
    max_new_tokens: int = 128
    """Maximum tokens generated per response."""
    stop_token_ids: list[int] = field(default_factory=list)
    """Token ids that end a response (the tokenizer's EOS is always added)."""
    stop: list[str] = field(default_factory=list)
    """Stop strings, tokenised once at start-up into stop token ids where single-token."""
    seed: int = 0
    """Sampling seed (per-request seeds derive from it)."""

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ConfigError(f"generation.num_samples={self.num_samples} must be >= 1")
        if self.temperature < 0:
            raise ConfigError(f"generation.temperature={self.temperature} must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"generation.top_p={self.top_p} must be in (0, 1]")
        if self.top_k == 0 or self.top_k < -1:
            raise ConfigError(f"generation.top_k={self.top_k} must be -1 (disabled) or >= 1")
        if self.max_new_tokens < 1:
            raise ConfigError(f"generation.max_new_tokens={self.max_new_tokens} must be >= 1")
