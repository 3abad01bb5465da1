"""Batched hyperparameter sweeps: many configurations in one compiled program.

  mg.sweep.spec      sweep files: grids / member lists over traced fields and seeds
  mg.sweep.program   the vmapped (and sharded) training and target evaluation
  mg.sweep.results   sweep.json / sweep.md, best per method, accuracy plots
  mg.sweep.runner    a whole sweep: data per seed, one program per method
  mg.sweep.bench     the batched sweep against sequential single runs
"""

from mg.sweep.spec import Member, SweepError, TRACED_FIELDS, load, member_config, members
from mg.sweep.runner import run_sweep
