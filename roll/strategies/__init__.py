"""roll.strategies package."""
