"""The one registry the entry points use: ``config.system`` -> the system's entry module.

Each entry module (``mg.<system>.system``) has ``validate(config)``,
``run(config, workdir)``, ``sweep(config, sweep, workdir, *, title, members)``
and ``bench_sweep(...)``; ``experiments/`` calls these and branches on nothing.
A config without a ``system`` field is MetaGater's.
"""

from __future__ import annotations

import importlib
import types

from mg.errors import ConfigError

SYSTEMS = {'metagater': 'mg.metagater.system', 'reefl': 'mg.reefl.system'}


def name_of(config) -> str:
  return config.get('system', 'metagater')


def get(config) -> types.ModuleType:
  """The entry module of ``config``'s system."""
  name = name_of(config)
  if name not in SYSTEMS:
    raise ConfigError(f'system={name!r}: expected one of {tuple(SYSTEMS)}')
  return importlib.import_module(SYSTEMS[name])
