r"""Runs one experiment: every configured method, the paper's tables and plots.

  python -m experiments.main --config=configs/digits.py [--workdir=DIR] \
      [--config.meta.rounds=50 ...]

Without ``--workdir`` the results go to a fresh folder under ``runs/``.
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from mg import config as config_lib
from mg import data as data_lib
from mg import run as run_lib

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (configs/*.py).', lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Folder for results; default: a fresh folder under runs/.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config_name = os.path.splitext(os.path.basename(flags.FLAGS['config'].config_filename))[0]
  workdir = _WORKDIR.value or run_lib.default_workdir(config_name)
  print(f'workdir: {workdir}', flush=True)
  try:
    run_lib.run(_CONFIG.value, workdir)
  except (config_lib.ConfigError, data_lib.DataError) as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(main)
