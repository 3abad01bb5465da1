"""The error every entry point turns into one line: a config that cannot run."""


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field and the fix."""
