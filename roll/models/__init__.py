"""roll.models package."""
