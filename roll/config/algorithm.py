"""RL algorithm configuration: advantage estimator, clipping, KL, entropy, loss aggregation."""

from dataclasses import dataclass
from typing import Optional

from roll.config.errors import ConfigError

ADVANTAGE_ESTIMATORS = (
    "grpo",
    "gae",
    "rloo",
    "reinforce_plus_plus",
    "reinforce_plus_plus_baseline",
    "gigpo",
)
POLICY_LOSSES = ("ppo", "gspo", "cispo")
KL_ESTIMATORS = ("kl", "mse", "low_var_kl")
LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


@dataclass(kw_only=True)
class AlgorithmConfig:
    """Everything that turns rewards into a policy (and value) loss."""

    advantage_estimator: str = "grpo"
    """grpo (StarPO on agentic episodes) | gae (needs a critic) | rloo | reinforce_plus_plus(_baseline) | gigpo."""
    norm_adv_by_std: bool = True
    """GRPO: divide by the group std; false gives Dr.GRPO."""
    gigpo_step_weight: float = 1.0
    """GiGPO: weight of the step-level (anchor-state group) advantage added to the episode-level one."""
    gamma: float = 1.0
    """Discount factor (GAE, REINFORCE++)."""
    lam: float = 1.0
    """GAE lambda."""
    policy_loss: str = "ppo"
    """ppo (token ratio, clipped) | gspo (sequence-level ratio) | cispo (clipped IS weight)."""
    clip_ratio_low: float = 0.2
    """Lower clip: ratio >= 1 - clip_ratio_low."""
    clip_ratio_high: float = 0.2
    """Upper clip: ratio <= 1 + clip_ratio_high (DAPO clip-higher uses e.g. 0.28)."""
    dual_clip_c: Optional[float] = None
    """Dual-clip constant c > 1 bounding the loss for negative advantages; None disables."""
    value_clip: Optional[float] = 0.2
    """Critic value clipping range; None disables."""
    kl_estimator: str = "low_var_kl"
    """kl (k1) | mse (k2) | low_var_kl (k3)."""
    kl_coef: float = 0.0
    """Initial KL coefficient; 0 disables the reference model."""
    use_kl_loss: bool = True
    """true: KL is a loss term (GRPO style); false: KL penalty is folded into the token rewards (PPO)."""
    adaptive_kl: bool = False
    """Adapt kl_coef towards kl_target (adaptive controller)."""
    kl_target: float = 0.01
    """Target KL of the adaptive controller."""
    kl_horizon: int = 10000
    """Horizon (samples) of the adaptive controller."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient (loss -= coef * entropy)."""
    loss_agg_mode: str = "token-mean"
    """token-mean | seq-mean-token-sum | seq-mean-token-mean | seq-mean-token-sum-norm."""
    whiten_advantages: bool = False
    """Whiten advantages over the batch's response tokens."""
    whiten_rewards: bool = False
    """Whiten sequence scores over the batch before advantages."""
    reward_clip: Optional[float] = None
    """Clip scores to [-reward_clip, reward_clip]; None disables."""
    advantage_clip: Optional[float] = None
    """Clip advantages to [-advantage_clip, advantage_clip]; None disables."""
    ppo_epochs: int = 1
    """Passes over each rollout batch."""
    mini_batch_size: int = 8
    """Samples (responses) per optimizer step."""

    def __post_init__(self) -> None:
        _one_of("advantage_estimator", self.advantage_estimator, ADVANTAGE_ESTIMATORS)
        _one_of("policy_loss", self.policy_loss, POLICY_LOSSES)
        _one_of("kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        _one_of("loss_agg_mode", self.loss_agg_mode, LOSS_AGG_MODES)
        if not 0 <= self.gamma <= 1:
            raise ConfigError(f"algorithm.gamma={self.gamma} must be in [0, 1]")
        if self.gigpo_step_weight < 0:
            raise ConfigError(f"algorithm.gigpo_step_weight={self.gigpo_step_weight} must be >= 0")
        if not 0 <= self.lam <= 1:
            raise ConfigError(f"algorithm.lam={self.lam} must be in [0, 1]")
        if not 0 <= self.clip_ratio_low < 1:
            raise ConfigError(f"algorithm.clip_ratio_low={self.clip_ratio_low} must be in [0, 1)")
        if self.clip_ratio_high < 0:
            raise ConfigError(f"algorithm.clip_ratio_high={self.clip_ratio_high} must be >= 0")
        if self.dual_clip_c is not None and self.dual_clip_c <= 1:
            raise ConfigError(f"algorithm.dual_clip_c={self.dual_clip_c} must be > 1 (e.g. 3.0) or null")
        if self.kl_coef < 0:
            raise ConfigError(f"algorithm.kl_coef={self.kl_coef} must be >= 0")
        for name in ("value_clip", "reward_clip", "advantage_clip"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"algorithm.{name}={value} must be > 0 or null")
        if self.ppo_epochs < 1:
            raise ConfigError(f"algorithm.ppo_epochs={self.ppo_epochs} must be >= 1")
        if self.mini_batch_size < 1:
            raise ConfigError(f"algorithm.mini_batch_size={self.mini_batch_size} must be >= 1")

    @property
    def needs_critic(self) -> bool:
        """GAE advantages need a value model."""
        return self.advantage_estimator == "gae"

    @property
    def needs_reference(self) -> bool:
        """A reference model is needed whenever KL is used (loss or reward penalty)."""
        return self.kl_coef > 0 or self.adaptive_kl


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        from difflib import get_close_matches

        close = get_close_matches(str(value), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"algorithm.{name}={value!r} is not one of {'|'.join(allowed)}{hint}")
