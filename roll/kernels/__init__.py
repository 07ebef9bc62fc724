"""roll.kernels package."""
