"""roll.distributed package."""
