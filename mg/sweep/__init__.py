"""Sweeps of either system: sweep files, members and their ranking on validation.

  mg.sweep.spec      sweep files: grids / member lists over fields and seeds, per family
  mg.sweep.results   the best configuration per method, ranked on validation

How a system trains its members is its own: ``mg.metagater.sweep`` (one batched
program per method) and ``mg.reefl.sweep``.
"""

from mg.sweep.spec import Family, Member, SweepError, load, member_config, members
