"""roll.rewards package."""
