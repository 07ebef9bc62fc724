"""roll.envs package."""
