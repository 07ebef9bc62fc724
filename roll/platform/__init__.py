"""roll.platform package."""
