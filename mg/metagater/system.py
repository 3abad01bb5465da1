"""What the entry points call for a MetaGater config (see ``mg.systems``)."""

from __future__ import annotations

from mg.metagater import config as config_lib
from mg.metagater import run as run_lib
from mg.metagater.sweep import bench as bench_lib
from mg.metagater.sweep import family
from mg.metagater.sweep import runner
from mg.sweep import spec

validate = config_lib.validate
run = run_lib.run


def members(sweep, config) -> tuple:
  """The checked members of a loaded sweep file."""
  validate(config)
  return spec.members(sweep, config, family=family.METAGATER)


def sweep(config, sweep, workdir: str, *, title: str, members_mapping: str = 'auto') -> dict:
  """Every member of ``sweep``, one batched program per method (``mg.metagater.sweep``)."""
  return runner.run_sweep(config, members(sweep, config), workdir, title=title,
                          member_mapping=members_mapping)


def bench_sweep(config, sweep, *, members_mapping: str, repeats: int) -> dict:
  """The batched sweep timed against the same members run one after another."""
  chosen = members(sweep, config)
  setup = runner.SweepSetup(config, [m.seed for m in chosen], members=members_mapping)
  return bench_lib.bench(setup, chosen, repeats=repeats)
