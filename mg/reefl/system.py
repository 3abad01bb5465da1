"""What the entry points call for a ReeFL config (see ``mg.systems``)."""

from __future__ import annotations

from mg.errors import ConfigError
from mg.reefl import config as reefl_config
from mg.reefl import run as reefl_run
from mg.reefl import sweep as reefl_sweep

validate = reefl_config.validate
run = reefl_run.run


def sweep(config, sweep, workdir: str, *, title: str, members_mapping: str = 'auto') -> dict:
  """Every member of ``sweep``, one after another (``mg.reefl.sweep``)."""
  if members_mapping == 'vmap':
    raise ConfigError('--members=vmap: a ReeFL sweep runs its members one after another '
                      "(one program per budget tier); use --members=loop or auto")
  return reefl_sweep.run_sweep(config, reefl_sweep.members(sweep, config), workdir,
                               title=title)


def bench_sweep(config, sweep, *, members_mapping: str, repeats: int) -> dict:
  raise ConfigError('--bench times a batched sweep against sequential runs; a ReeFL sweep '
                    'runs its members one after another, so there is nothing to compare')
