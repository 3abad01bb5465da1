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

# XLA:CPU options per system (``mg.federated.backend.configure``; None: its
# CPU_FLAGS, YNNPACK off, measured faster for the CNNs). The ViT runs faster
# with XLA:CPU's default, YNNPACK on (docs/speed.md, "ReeFL rounds").
CPU_OPTIONS = {'metagater': None, 'reefl': {}}


def name_of(config) -> str:
  return config.get('system', 'metagater')


def cpu_options(config) -> dict | None:
  """The XLA:CPU options ``config``'s system runs with (``CPU_OPTIONS``)."""
  return CPU_OPTIONS.get(name_of(config))


def get(config) -> types.ModuleType:
  """The entry module of ``config``'s system."""
  name = name_of(config)
  if name not in SYSTEMS:
    raise ConfigError(f'system={name!r}: expected one of {tuple(SYSTEMS)}')
  return importlib.import_module(SYSTEMS[name])
