"""roll.config package."""
