"""Small shared utilities (logging) used across the library."""
