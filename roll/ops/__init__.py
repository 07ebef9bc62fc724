"""roll.ops package."""
