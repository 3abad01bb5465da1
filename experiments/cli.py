"""What every entry point shares: flag parsing and the one-line errors.

Every bad input (a misspelt ``--config.`` field, a bad value, a workdir that
cannot hold the run, missing data, a checkpoint that cannot be written) ends
the command with one line on stderr saying what to do, and a non-zero exit
status; never a traceback.
"""

import datetime
import os
import re
import sys
from typing import Optional

from absl import flags
from absl import logging

from mg import data as data_lib
from mg.errors import ConfigError
from mg.harness import checkpoint as checkpoint_lib
from mg.harness import workdir as workdir_lib

# The errors whose message is the whole story (it names the input and the fix).
USER_ERRORS = (ConfigError, data_lib.DataError, workdir_lib.WorkdirError,
               checkpoint_lib.CheckpointError)


def default_workdir(config_name: str) -> str:
  """A fresh ``runs/<config>-<time>`` folder, when no ``--workdir`` is given."""
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  return os.path.join('runs', f'{config_name}-{stamp}')


def parse_flags(argv):
  """absl's parser, with a bad ``--config.field=value`` as one line, not a traceback."""
  try:
    rest = flags.FLAGS(argv)
    _check_config_loaded()
    return rest
  except flags.Error as e:
    sys.exit(f'error: {_without_traceback(str(e))}\nPass --help to see the flags.')
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    text = ' '.join(str(e).replace('\\n', ' ').replace("\\'", "'").split())
    typo = re.search(r"'(\w+)' Did you mean \"(\w+)\"", text)
    if typo:
      text = f"the config has no field '{typo[1]}' (did you mean '{typo[2]}'?)"
    elif isinstance(e, KeyError):
      text = _missing_field(argv, str(e.args[0] if e.args else text).strip("\"'"))
    sys.exit(f'error: bad --config override: {text}')


def _missing_field(argv, key: str) -> str:
  """A ``KeyError`` of an override as the dotted field the config lacks."""
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    path = arg[len('--config.'):].split('=', 1)[0].split('.')
    if key in path:
      field = '.'.join(path[:path.index(key) + 1])
      return f"the config has no field '{field}' ({arg.split('=', 1)[0]})"
  return f'the config has no field {key!r}'


def quiet_logs() -> None:
  """Library notes (checkpoints, backends) at WARNING unless ``--verbosity`` is given,
  so that a refusal is the one line it says and progress is not drowned."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


def no_arguments(argv) -> None:
  """Ends the command with one line when it was given positional arguments."""
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments {argv[1:]}: every input is a --flag '
             '(pass --help to see them)')


def _check_config_loaded():
  """ml_collections defers a config file that cannot be loaded (a wrong path) to
  the first use of ``--config``; this makes it one line at parse time instead."""
  if 'config' not in flags.FLAGS or flags.FLAGS['config'].value is None:
    return
  try:
    flags.FLAGS['config'].value.get('system')
  except OSError as e:
    reason = [l.strip() for l in str(e).splitlines() if l.strip()][-1]
    sys.exit(f"error: cannot load --config={flags.FLAGS['config'].config_filename}: "
             f'{reason}')


def _without_traceback(text: str) -> str:
  """A flag error as its first line and the raised error, without the traceback
  that ml_collections puts inside the message of a config file's exception."""
  if 'Traceback (most recent call last)' not in text:
    return text
  lines = [l for l in text.splitlines() if l.strip()]
  return f'{lines[0]} {lines[-1]}'


def exit_with(error: BaseException, made_workdir: Optional[str] = None):
  """Ends the command with ``error`` as one line (exit status 1).

  ``made_workdir``: the workdir, when this command created it; it is removed
  again if the refused command left nothing in it but its lock file.
  """
  if made_workdir:
    workdir_lib.discard_unused(made_workdir)
  if isinstance(error, OSError) and not isinstance(error, USER_ERRORS):
    where = f' ({error.filename})' if error.filename else ''
    sys.exit(f'error: {error.strerror or error}{where}; check that disk and folder, then '
             'rerun the same command (a run resumes from its last checkpoint)')
  sys.exit(f'error: {error}')
