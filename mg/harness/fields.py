"""Checks of config fields, and of the run fields every config of either system has.

``check``, ``integer``, ``positive``, ``boolean``: one-line ``ConfigError`` s
naming the field, its value and what is expected; each system's config check
(``mg.metagater.config``, ``mg.reefl.config``) is built from them.
``validate_run``: the fields the harness itself reads (seed, repeats,
evaluation and checkpoint cadence, resume, progress), checked alike for both
systems.
"""

from __future__ import annotations

from mg.errors import ConfigError


def check(ok: bool, message: str) -> None:
  """Raises ``ConfigError(message)`` unless ``ok``."""
  if not ok:
    raise ConfigError(message)


def get(config, field: str):
  """The value of a dotted ``field`` (``'meta.rounds'``) of ``config``."""
  value = config
  for part in field.split('.'):
    value = value[part]
  return value


def is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(config, field: str, low: int = 1) -> None:
  """``field`` is an integer >= ``low``."""
  value = get(config, field)
  check(isinstance(value, int) and not isinstance(value, bool) and value >= low,
        f'{field}={value!r}: expected an integer >= {low}')


def positive(config, field: str) -> None:
  """``field`` is a number > 0."""
  value = get(config, field)
  check(is_number(value) and value > 0, f'{field}={value!r}: expected a number > 0')


def boolean(config, field: str) -> None:
  value = get(config, field)
  check(isinstance(value, bool), f'{field}={value!r}: expected True or False')


def validate_run(config) -> None:
  """The harness's own fields: the same rules for every system's runs and sweeps."""
  for field in ('repeats', 'eval_every', 'checkpoint_every', 'keep_checkpoints'):
    integer(config, field)
  integer(config, 'seed', low=0)
  for field in ('resume', 'progress'):
    boolean(config, field)
  check(isinstance(config.get('compile_cache_dir', ''), str),
        f"compile_cache_dir={config.get('compile_cache_dir')!r}: expected a folder path, "
        "or '' for none")
