"""The one exception type of configuration errors: a one-line message naming field, value, rule, fix."""


class ConfigError(ValueError):
    """A configuration value breaks a rule; the message names the field, the values and the fix."""
