r"""Runs one experiment: every configured method, the paper's tables and plots.

  python -m experiments.main --config=configs/digits.py [--workdir=DIR] \
      [--config.meta.rounds=50 ...]

Without ``--workdir`` the results go to a fresh folder under ``runs/``.
Checkpoints go to ``DIR/checkpoints``; after Ctrl-C, SIGTERM or a crash,
rerunning the same command with the same ``--workdir`` resumes the run.
"""

import os
import shlex
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import cli
from mg import systems
from mg.federated import backend
from mg.harness import checkpoint as checkpoint_lib

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (configs/*.py).', lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Folder for results; default: a fresh folder under runs/.')


def resume_command(workdir: str) -> str:
  """The command line that resumes this run (with its workdir made explicit).

  A ``--config.resume=...`` of the interrupted command is dropped: the run it
  started is resumed, not started over again.
  """
  args = [a for a in sys.argv[1:] if not a.startswith('--config.resume=')]
  if not any(a == '--workdir' or a.startswith('--workdir=') for a in args):
    args.append(f'--workdir={workdir}')
  return shlex.join(['python', '-m', 'experiments.main', *args])


def main(argv):
  cli.no_arguments(argv)
  cli.quiet_logs()
  # XLA:CPU options and multi-host set-up must come before any JAX computation.
  backend.configure(_CONFIG.value.get('distributed'),
                    cpu_options=systems.cpu_options(_CONFIG.value),
                    compile_cache_dir=_CONFIG.value.get('compile_cache_dir'))
  config_name = os.path.splitext(os.path.basename(flags.FLAGS['config'].config_filename))[0]
  workdir = _WORKDIR.value or cli.default_workdir(config_name)
  made = None if os.path.exists(workdir) else workdir  # removed again if refused
  print(f'workdir: {workdir}', flush=True)
  start = time.perf_counter()
  try:
    with backend.CompileClock() as clock:
      systems.get(_CONFIG.value).run(_CONFIG.value, workdir)
  except checkpoint_lib.Interrupted as e:
    print(f'interrupted at {e.where}; its progress is checkpointed in '
          f'{os.path.join(workdir, checkpoint_lib.CHECKPOINT_DIR)}; resume with:\n'
          f'  {resume_command(workdir)}', file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
  except (*cli.USER_ERRORS, OSError) as e:
    cli.exit_with(e, made_workdir=made)
  wall = time.perf_counter() - start
  print(f'compile: {clock.seconds:.1f} s of {wall:.1f} s wall ({clock.seconds / wall:.0%}; '
        'tracing, lowering and compiling or loading from the compile cache)', flush=True)


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(main, flags_parser=cli.parse_flags)
