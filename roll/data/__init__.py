"""roll.data package."""
