"""roll.algorithms package."""
