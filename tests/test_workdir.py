"""One run per workdir, a workdir no command gets stuck on, and one line for each
bad workdir (issue 15): the lock, the config of record, the layout checks, a
disk full during a checkpoint, and a second run while one holds the workdir."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from experiments import cli
from mg import data as data_lib
from data_helpers import config_with as _config, session_restored
from mg.metagater import run as run_lib
from mg.harness import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ('--config=configs/test.py', '--config.methods=("fedavg",)',
        '--config.meta.rounds=3', '--config.checkpoint_every=1')


def _env():
  return dict(os.environ, JAX_PLATFORMS='cpu')


def _main(*args, prelude=''):
  """``python -m experiments.main`` (after ``prelude``, e.g. a fault injection)."""
  code = (f'{prelude}\nimport runpy, sys\nsys.argv = ["experiments.main"] + sys.argv[1:]\n'
          'runpy.run_module("experiments.main", run_name="__main__", alter_sys=True)')
  return subprocess.run([sys.executable, '-c', code, *args], cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=600)


def _one_line_error(proc, *needles):
  assert proc.returncode == 1, (proc.stdout[-2000:], proc.stderr[-3000:])
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, proc.stderr[-3000:]
  for needle in needles:
    assert needle in errors[0], errors[0]
  return errors[0]


# ---------------------------------------------------------------------- the lock


def test_a_second_lock_is_refused_naming_the_holder(tmp_path):
  with workdir_lib.Lock(str(tmp_path / 'w')):
    with pytest.raises(workdir_lib.WorkdirError) as error:
      with workdir_lib.Lock(str(tmp_path / 'w')):
        pass
    assert f'is in use by another run (pid {os.getpid()})' in str(error.value)
  with workdir_lib.Lock(str(tmp_path / 'w')):  # released on exit
    pass


_HOLDER = """
import sys, time
from mg.harness import workdir
with workdir.Lock(sys.argv[1]):
  print('locked', flush=True)
  time.sleep(600)
"""


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
  workdir = str(tmp_path / 'w')
  holder = subprocess.Popen([sys.executable, '-c', _HOLDER, workdir], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline() == 'locked\n'
    with pytest.raises(workdir_lib.WorkdirError, match=f'pid {holder.pid}'):
      workdir_lib.Lock(workdir).__enter__()
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
  with workdir_lib.Lock(workdir):
    assert open(os.path.join(workdir, '.lock')).read() == f'{os.getpid()}\n'


def test_a_second_run_in_a_held_workdir_stops_with_one_line(tmp_path):
  workdir = tmp_path / 'w'
  with workdir_lib.Lock(str(workdir)):
    start = time.perf_counter()
    proc = _main(*FAST, f'--workdir={workdir}')
    _one_line_error(proc, f'workdir {workdir} is in use by another run (pid {os.getpid()})',
                    'another --workdir')
  assert time.perf_counter() - start < 60
  assert sorted(os.listdir(workdir)) == ['.lock']  # the refused run wrote nothing


# ------------------------------------------------------ bad workdirs, one line each


def _read_only(monkeypatch):
  real_open = os.open

  def fake_open(path, *args, **kwargs):
    if str(path).endswith('.lock'):
      raise OSError(errno.EROFS, 'Read-only file system', str(path))
    return real_open(path, *args, **kwargs)

  monkeypatch.setattr(os, 'open', fake_open)


@pytest.mark.parametrize('case, message', [
    ('file', 'is a file, not a folder'),
    ('under_file', 'cannot be created: {tmp}/f is a file, not a folder'),
    ('read_only', 'is not writable (Read-only file system)'),
    ('config_dir', "config.json is a folder where a run keeps its config.json file"),
    ('checkpoints_file', 'checkpoints is a file where a run keeps its checkpoints folder'),
    ('metrics_dir', 'metrics.jsonl is a folder where a run keeps its metrics.jsonl file'),
])
def test_a_bad_workdir_is_one_clear_error(test_config, tmp_path, monkeypatch, case, message):
  workdir = tmp_path / 'w'
  if case == 'file':
    workdir.write_text('x')
  elif case == 'under_file':
    (tmp_path / 'f').write_text('x')
    workdir = tmp_path / 'f' / 'w'
  elif case == 'read_only':
    _read_only(monkeypatch)
  else:
    workdir.mkdir()
    name = {'config_dir': 'config.json', 'checkpoints_file': 'checkpoints',
            'metrics_dir': 'metrics.jsonl'}[case]
    if case == 'checkpoints_file':
      (workdir / name).write_text('x')
    else:
      (workdir / name).mkdir()
  with pytest.raises(cli.USER_ERRORS) as error:
    run_lib.run(test_config, str(workdir))
  assert isinstance(error.value, workdir_lib.WorkdirError)
  assert message.format(tmp=tmp_path) in str(error.value) and '\n' not in str(error.value)


def test_the_cli_says_a_file_workdir_in_one_line(tmp_path):
  (tmp_path / 'f').write_text('x')
  _one_line_error(_main(*FAST, f'--workdir={tmp_path / "f"}'), 'is a file, not a folder')


def test_a_run_that_fails_on_its_data_changes_nothing(test_config, tmp_path):
  """Issue 15, 2: it must not lock the workdir to its (wrong) data dir."""
  workdir = tmp_path / 'w'
  bad = _config(test_config, **{'data.source': 'raw', 'data.name': 'mnist',
                                'data.dir': str(tmp_path / 'empty')})
  (tmp_path / 'empty').mkdir()
  with pytest.raises(data_lib.DataError):
    run_lib.run(bad, str(workdir))
  assert sorted(os.listdir(workdir)) == ['.lock']
  assert session_restored(test_config, workdir) is None  # accepted


def test_only_a_workdir_holding_just_its_lock_is_discarded(tmp_path):
  """A refused command removes the workdir it made, never one with anything in it."""
  empty, used = tmp_path / 'empty', tmp_path / 'used'
  for folder in (empty, used):
    folder.mkdir()
    (folder / '.lock').write_text('1\n')
  (used / 'config.json').write_text('{}')
  workdir_lib.discard_unused(str(empty))
  workdir_lib.discard_unused(str(used))
  workdir_lib.discard_unused(str(tmp_path / 'gone'))  # nothing there: nothing to do
  assert not empty.exists()
  assert sorted(os.listdir(used)) == ['.lock', 'config.json']


# ------------------------------------------------------------------ disk full

_NO_SPACE_FROM_SAVE_2 = """
import errno
import orbax.checkpoint as ocp
handler = ocp.handlers.JsonCheckpointHandler
real = handler._save_fn
calls = []
async def save_fn(self, x, directory):
  calls.append(1)
  if len(calls) >= 2:
    raise OSError(errno.ENOSPC, 'No space left on device')
  return await real(self, x, directory)
handler._save_fn = save_fn
"""


def test_a_disk_full_checkpoint_is_one_line_and_the_run_resumes(tmp_path):
  workdir = tmp_path / 'w'
  proc = _main(*FAST, f'--workdir={workdir}', prelude=_NO_SPACE_FROM_SAVE_2)
  _one_line_error(proc, 'could not write checkpoint 2', 'the disk is full',
                  'checkpoint 1, the last good one, stays usable', 'rerun the same command')
  assert not (workdir / 'results.json').exists()
  proc = _main(*FAST, f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'resuming from checkpoint 1: round 1 of fedavg' in proc.stdout
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  rounds = [r['round'] for r in records if r['method'] == 'fedavg' and 'event' not in r]
  assert rounds == [1, 2, 3]  # each round once: none lost, none repeated


def test_a_sweep_holds_its_workdir_the_same_way(test_config, tmp_path):
  from mg.metagater import system as metagater  # pylint: disable=import-outside-toplevel
  from mg.metagater.sweep import runner  # pylint: disable=import-outside-toplevel
  members = metagater.members({'method': 'fedavg', 'grid': {'adapt.lr': [0.1]}}, test_config)
  with workdir_lib.Lock(str(tmp_path)):
    with pytest.raises(workdir_lib.WorkdirError, match='in use by another run'):
      runner.run_sweep(test_config, members, str(tmp_path))
  (tmp_path / 'checkpoints').write_text('x')
  with pytest.raises(workdir_lib.WorkdirError, match='checkpoints is a file'):
    runner.run_sweep(test_config, members, str(tmp_path))
  assert not (tmp_path / 'config.json').exists()
