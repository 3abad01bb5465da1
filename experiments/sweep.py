r"""Runs a hyperparameter sweep: many configurations in one compiled program.

  python -m experiments.sweep --config=configs/digits.py \
      --sweep=configs/sweeps/digits.py [--workdir=DIR] [--config.meta.rounds=50 ...]

The sweep file (format: ``mg/sweep/spec.py``) lists the values of the traced
hyperparameters and the seeds; everything else comes from ``--config``. Writes
``sweep.json``, ``sweep.md`` and ``sweep_<field>.png`` to the workdir.

  python -m experiments.sweep --config=configs/digits.py \
      --sweep=configs/sweeps/digits.py:bench --config.meta.rounds=30 --bench

times the batched sweep against the same configurations run one after another
in this process, and prints the wall times, their ratio and a JSON line.

  python -m experiments.sweep --config=configs/reefl/mnist_baselines.py \
      --config.data.dir=DIR --sweep=configs/reefl/sweeps/mnist.py \
      --workdir=DIR

sweeps ReeFL and its baselines (configs with ``system='reefl'``; ``mg.reefl.sweep``):
a method's members at one seed trained together in one vmapped round
(``--members=vmap``, ``auto`` off a CPU) or one after another (``loop``), each
method's best configuration chosen on the validation clients. Rerunning the
same command resumes it; ``--bench`` times the two against each other.
"""

import json
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import cli
from mg import sweep as sweep_lib
from mg import systems
from mg.federated import backend
from mg.harness import checkpoint as checkpoint_lib
from mg.report import serialize

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (configs/*.py).', lock_config=True)
_SWEEP = flags.DEFINE_string(
    'sweep', None, 'Sweep file (configs/sweeps/*.py), optionally file.py:variant.')
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Folder for results; default: a fresh folder under runs/.')
_BENCH = flags.DEFINE_bool(
    'bench', False, 'Time the batched sweep against sequential single runs instead.')
_MEMBERS = flags.DEFINE_enum(
    'members', 'auto', ['auto', 'vmap', 'loop'],
    "How members are mapped: one vmapped program ('vmap') or one after another "
    "through the single run's round ('loop'); 'auto': the measured default.")
_BENCH_REPEATS = flags.DEFINE_integer(
    'bench_repeats', 2, 'Benchmark repetitions (the first includes compilation).')


def main(argv):
  cli.no_arguments(argv)
  cli.quiet_logs()
  config = _CONFIG.value
  backend.configure(config.get('distributed'),  # as experiments.main does
                    cpu_options=systems.cpu_options(config),
                    compile_cache_dir=config.get('compile_cache_dir'))
  config_name = os.path.splitext(os.path.basename(flags.FLAGS['config'].config_filename))[0]
  sweep_name = os.path.splitext(os.path.basename(_SWEEP.value.partition(':')[0]))[0]
  variant = _SWEEP.value.partition(':')[2]
  title = f"sweep {sweep_name}{':' + variant if variant else ''} of {config_name}"
  workdir = _WORKDIR.value or cli.default_workdir(
      f"sweep-{sweep_name}{'-bench' if _BENCH.value else ''}")
  made = None if os.path.exists(workdir) else workdir  # removed again if refused
  print(f'workdir: {workdir}', flush=True)
  try:
    system = systems.get(config)
    if not _BENCH.value:
      system.sweep(config, sweep_lib.load(_SWEEP.value), workdir, title=title,
                   members_mapping=_MEMBERS.value)
      return
    figures = system.bench_sweep(config, sweep_lib.load(_SWEEP.value),
                                 members_mapping=_MEMBERS.value, repeats=_BENCH_REPEATS.value)
    serialize.atomic_write_text(os.path.join(workdir, 'bench.json'),
                                json.dumps(dict(figures, title=title), indent=2) + '\n')
  except checkpoint_lib.Interrupted as e:
    print(f'interrupted at {e.where}; its progress is checkpointed in {workdir}; resume by '
          'rerunning the same command', file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
  except (sweep_lib.SweepError, *cli.USER_ERRORS, OSError) as e:
    cli.exit_with(e, made_workdir=made)


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  flags.mark_flag_as_required('sweep')
  app.run(main, flags_parser=cli.parse_flags)
