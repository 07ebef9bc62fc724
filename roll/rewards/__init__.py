"""Rule rewards: the registry, the bundled functions (math_exact, countdown, format) and the batched
`RewardComputer` that sums them with per-call error and time limits."""

from roll.rewards import rule_countdown, rule_format, rule_math  # noqa: F401  (register the bundled functions)
from roll.rewards.composite import RewardComputer
from roll.rewards.registry import get_reward_fn, register_reward, registered_rewards

__all__ = ["RewardComputer", "get_reward_fn", "register_reward", "registered_rewards"]
