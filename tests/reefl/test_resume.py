"""ReeFL runs and sweeps under the run harness: killed, resumed, compared.

A run is ``python -m experiments.main`` on configs/reefl/test.py with two
methods for 5 rounds and a checkpoint every 2; a sweep is
``python -m experiments.sweep`` on the same config with two members. Each is
stopped by SIGTERM (it saves and exits 143), resumed and stopped again by
SIGKILL (it dies at once, after logging rounds past its last checkpoint), then
resumed to the end: its results must equal an uninterrupted run's, timing fields
aside, and ``metrics.jsonl`` must hold each (method, round) exactly once, with the
reference's records. The references run in this process on the session's
compiled programs; their logged losses may differ from a fresh process's in the
last float32 bit, so records are compared to a relative 1e-6. The sweep's
commands run in a thread alongside the run's: each command is mostly one busy
core.
"""

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from data_helpers import ROOT, checkpoint_steps, compared, config_with

from configs.reefl import test as reefl_test
from mg.errors import ConfigError
from mg.reefl import run as reefl_run
from mg.reefl import sweep as reefl_sweep
from mg.sweep import spec

RUN = ('experiments.main', '--config=configs/reefl/test.py',
       '--config.methods=("reefl","reefl_lastkd")', '--config.fl.rounds=5',
       '--config.checkpoint_every=2')
# The same run's uninterrupted reference, in this process (its programs shared).
FIELDS = {'methods': ('reefl', 'reefl_lastkd'), 'fl.rounds': 5, 'checkpoint_every': 2}
SWEEP_FILE = """
def get_sweep():
  return [{'method': 'reefl', 'grid': {'per_method.reefl.lr': [0.05, 0.1]}}]
"""
# Wall-clock measurements legitimately differ between runs; the resume history too.
NOT_COMPARED = {'train_time_s', 'wall_time_s', 'resumes', 'timing'}


@pytest.fixture(scope='module')
def env():
  """The session's environment: its compilation cache (tests/conftest.py) included."""
  return dict(os.environ, JAX_PLATFORMS='cpu')


@pytest.fixture(scope='module')
def sweep_args(tmp_path_factory):
  path = tmp_path_factory.mktemp('sweepfile') / 'two_members.py'
  path.write_text(SWEEP_FILE)
  return ('experiments.sweep', '--config=configs/reefl/test.py', '--config.fl.rounds=5',
          '--config.checkpoint_every=2', f'--sweep={path}')



def _command(args, workdir, *extra):
  return [sys.executable, '-m', *args, f'--workdir={workdir}', *extra]


def _finish(env, args, workdir, *extra):
  proc = subprocess.run(_command(args, workdir, *extra), cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _compared(value):
  return compared(value, NOT_COMPARED)


def _lines(workdir):
  path = workdir / 'metrics.jsonl'
  return path.read_text().splitlines() if path.exists() else []


_steps = checkpoint_steps


def _interrupt(env, args, workdir, sig):
  """Starts the command; sends ``sig`` once it has logged 3 rounds past where it started.

  With a checkpoint every 2 rounds, at least one of them is past its last checkpoint
  when ``sig`` is SIGKILL: the resumed log must not hold it twice.
  """
  start_lines = len(_lines(workdir))
  proc = subprocess.Popen(_command(args, workdir), cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 600
  while proc.poll() is None and time.time() < deadline:
    if _steps(workdir) and len(_lines(workdir)) >= start_lines + 3:
      break
    time.sleep(0.005)
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=600)
  return proc.returncode, out, err


def _once_each(workdir, key):
  records = [json.loads(line) for line in _lines(workdir)]
  seen = [(r.get(key), r['method'], r['round']) for r in records if 'event' not in r]
  assert len(seen) == len(set(seen)), 'a (method, round) logged twice'
  return records


def _same_records(records, reference):
  """Equal records, numbers to a relative 1e-6 (the last float32 bit of a loss)."""
  assert len(records) == len(reference)
  for got, want in zip(records, reference):
    assert set(got) == set(want), (got, want)
    for key, value in want.items():
      if isinstance(value, float):
        assert got[key] == pytest.approx(value, rel=1e-6), (key, got, want)
      elif isinstance(value, list):
        assert got[key] == pytest.approx(value, rel=1e-6), (key, got, want)
      else:
        assert got[key] == value, (key, got, want)


def _killed_then_resumed(env, args, workdir):
  code, out, err = _interrupt(env, args, workdir, signal.SIGTERM)
  assert code == 143, (out[-2000:], err[-3000:])
  assert 'interrupted at' in err and 'Traceback' not in err, err[-3000:]
  code, out, err = _interrupt(env, args, workdir, signal.SIGKILL)
  assert code == -signal.SIGKILL, (code, out[-2000:], err[-3000:])
  assert 'resuming from checkpoint' in out
  proc = _finish(env, args, workdir)
  assert 'resuming from checkpoint' in proc.stdout


@pytest.fixture(scope='module')
def killed_sweep(env, sweep_args, tmp_path_factory):
  """The sweep's kill-and-resume sequence, started first so that it runs alongside the
  run's (each of its commands is mostly one busy core): ``(workdir, future)``."""
  workdir = tmp_path_factory.mktemp('sweep') / 'killed'
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    yield workdir, pool.submit(_killed_then_resumed, env, sweep_args, workdir)


@pytest.mark.slow
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_killed_reefl_run_resumes_to_the_uninterrupted_results(env, tmp_path, reefl_programs,
                                                               killed_sweep):
  del killed_sweep  # started now, checked by the sweep's test
  reference = tmp_path / 'reference'
  reefl_run.run(config_with(reefl_test.get_config(), **FIELDS), str(reference),
                programs=reefl_programs)
  workdir = tmp_path / 'killed'
  _killed_then_resumed(env, RUN, workdir)
  results = json.loads((workdir / 'results.json').read_text())
  assert len(results['resumes']) == 2
  assert _compared(results) == _compared(
      json.loads((reference / 'results.json').read_text()))
  _same_records(_once_each(workdir, 'regime'), _once_each(reference, 'regime'))


@pytest.mark.slow
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_killed_reefl_sweep_resumes_to_the_uninterrupted_results(sweep_args, tmp_path,
                                                                 reefl_programs, killed_sweep):
  reference = tmp_path / 'reference'
  config = config_with(reefl_test.get_config(), **{'fl.rounds': 5, 'checkpoint_every': 2})
  members = reefl_sweep.members(spec.load(sweep_args[-1].split('=', 1)[1]), config)
  reefl_sweep.run_sweep(config, members, str(reference), title='sweep two_members of test',
                        programs=reefl_programs)
  workdir, future = killed_sweep
  future.result(timeout=900)
  doc = json.loads((workdir / 'sweep.json').read_text())
  assert len(doc['resumes']) == 2
  assert _compared(doc) == _compared(json.loads((reference / 'sweep.json').read_text()))
  _same_records(_once_each(workdir, 'member'), _once_each(reference, 'member'))
  rows = [json.loads(line) for line in (workdir / 'members.jsonl').read_text().splitlines()]
  assert [r['member'] for r in rows] == [r['member'] for r in doc['rows']]
  # A run is refused in the sweep's workdir, naming the difference; nothing changes.
  before = (workdir / 'metrics.jsonl').read_text()
  with pytest.raises(ConfigError, match='it holds a sweep, not a run'):
    reefl_run.run(config_with(reefl_test.get_config(), **FIELDS), str(workdir))
  assert (workdir / 'metrics.jsonl').read_text() == before
