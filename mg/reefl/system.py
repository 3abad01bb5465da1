"""What the entry points call for a ReeFL config (see ``mg.systems``)."""

from __future__ import annotations

from mg.errors import ConfigError
from mg.reefl import config as reefl_config
from mg.reefl import run as reefl_run
from mg.reefl import sweep as reefl_sweep

validate = reefl_config.validate
run = reefl_run.run


def sweep(config, sweep, workdir: str, *, title: str, members_mapping: str = 'auto') -> dict:
  """Every member of ``sweep`` (``mg.reefl.sweep``); ``members_mapping``: vmap, loop or auto."""
  return reefl_sweep.run_sweep(config, reefl_sweep.members(sweep, config), workdir,
                               title=title, members_mapping=members_mapping)


def bench_sweep(config, sweep, *, members_mapping: str, repeats: int) -> dict:
  """The sweep's members batched against one after another (``mg.reefl.sweep.bench``)."""
  if members_mapping == 'loop':
    raise ConfigError('--bench times the batched members against --members=loop; '
                      'leave --members at auto or vmap')
  return reefl_sweep.bench(config, reefl_sweep.members(sweep, config), repeats=repeats)
