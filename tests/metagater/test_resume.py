"""Runs that survive: kill, resume, compare; a corrupted checkpoint; a NaN.

Each run is ``python -m experiments.main`` on configs/test.py with MetaGater w/o
gating, MetaGater and MetaSNIP for 6 rounds and a checkpoint every round. The
runs share the session's persistent compilation cache (tests/conftest.py), so
only the first one compiles.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from data_helpers import ROOT, checkpoint_steps, compared

ARGS = ('--config=configs/test.py',
        '--config.methods=("metagater_nogate","metagater","metasnip")',
        '--config.meta.rounds=6', '--config.checkpoint_every=1')
# Wall-clock measurements legitimately differ between runs; the resume history too.
NOT_COMPARED = {'train_time_s', 'adapt_time_s', 'seconds_per_round',
                'images_per_second', 'compile_s', 'resumes'}


@pytest.fixture(scope='module')
def env():
  """The session's environment: its compilation cache (tests/conftest.py) included."""
  return dict(os.environ, JAX_PLATFORMS='cpu')


def _command(workdir, *extra):
  return [sys.executable, '-m', 'experiments.main', *ARGS, f'--workdir={workdir}', *extra]


def _main(env, workdir, *extra):
  return subprocess.run(_command(workdir, *extra), cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)


@pytest.fixture(scope='module')
def reference(env, tmp_path_factory):
  """The uninterrupted run."""
  workdir = tmp_path_factory.mktemp('reference')
  proc = _main(env, workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def _compared(value):
  return compared(value, NOT_COMPARED)


def _results(workdir):
  return json.loads((workdir / 'results.json').read_text())


def _metrics(workdir):
  return [_compared(json.loads(line))
          for line in (workdir / 'metrics.jsonl').read_text().splitlines()]


_steps = checkpoint_steps


def _kill_after(env, workdir, checkpoints):
  """Starts the run and sends SIGTERM once ``checkpoints`` checkpoints exist."""
  proc = subprocess.Popen(_command(workdir), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  while proc.poll() is None and len(_steps(workdir)) < checkpoints:
    time.sleep(0.01)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=600)
  return proc.returncode, out, err


@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_killed_run_resumes_to_the_results_of_the_uninterrupted_run(env, reference,
                                                                     tmp_path):
  workdir = tmp_path / 'killed'
  code, out, err = _kill_after(env, workdir, checkpoints=3)
  assert code == 143, (out[-2000:], err[-3000:])
  assert 'interrupted at round' in err and 'resume with:' in err
  assert f'--workdir={workdir}' in err.split('resume with:')[1]
  assert 'Traceback' not in err, err[-3000:]
  assert not (workdir / 'results.json').exists()
  steps = _steps(workdir)
  assert len(steps) >= 3

  # The same workdir with another config is refused, and nothing is touched; the
  # checkpoint's config is the record, even with config.json gone (issue 15, 2).
  (workdir / 'config.json').unlink()
  proc = _main(env, workdir, '--config.meta.rho=0.5')
  assert proc.returncode == 1
  assert 'meta.rho: 0.01 -> 0.5' in proc.stderr and '--config.resume=False' in proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert _steps(workdir) == steps and not (workdir / 'config.json').exists()
  # A damaged log (lines repeated, a stray line) is rewritten to the checkpoint's rounds.
  log = (workdir / 'metrics.jsonl').read_text()
  (workdir / 'metrics.jsonl').write_text(log + log + '{"method": "stray", "round": 9}\n')

  # The newest checkpoint is truncated: the resume falls back to the one before,
  # quietly (no 'Event loop is closed' tracebacks from the abandoned read).
  newest = steps[-1]
  damaged = glob.glob(str(workdir / 'checkpoints' / str(newest) / 'arrays' / '**' / 'd' / '*'),
                      recursive=True)
  assert damaged
  for path in damaged:
    os.truncate(path, 5)
  proc = _main(env, workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f'warning: checkpoint {newest} is unreadable' in proc.stdout
  assert f'resuming from checkpoint {newest - 1}:' in proc.stdout
  assert 'Event loop is closed' not in proc.stdout + proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert json.loads((workdir / 'config.json').read_text())['meta']['rho'] == 0.01

  expected, got = _results(reference), _results(workdir)
  assert _compared(got) == _compared(expected)
  assert set(got['output_sha256']) == {'metagater_nogate', 'metagater'}
  assert len(got['resumes']) == 1 and not expected['resumes']
  assert [r['method'] for r in got['rows']] == ['metagater_nogate', 'metagater', 'metasnip']
  assert _metrics(workdir) == _metrics(reference)


def test_injected_nan_stops_the_method_and_marks_it_diverged(env, reference, tmp_path):
  del reference  # only its compilation cache
  workdir = tmp_path / 'nan'
  proc = _main(env, workdir, '--config.debug_nan_round=3',
               '--config.debug_nan_method=metagater')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'metagater: diverged at round 3 of repeat 1' in proc.stdout
  assert 'metasnip: not run: metagater, whose sparsity it matches, diverged' in proc.stdout
  rows = {r['method']: r for r in _results(workdir)['rows']}
  assert rows['metagater']['diverged'] and rows['metagater']['diverged_round'] == 3
  assert rows['metagater']['diverged_stage'] == 'training'
  assert rows['metagater']['accuracy_mean'] is None
  # Issue 15, 6: a method that was not run is not a divergence.
  assert not rows['metasnip']['diverged'] and rows['metasnip']['accuracy_mean'] is None
  assert rows['metasnip']['not_run'] == 'metagater, whose sparsity it matches, diverged'
  assert not rows['metagater_nogate']['diverged']
  assert 0.0 <= rows['metagater_nogate']['accuracy_mean'] <= 1.0
  markdown = (workdir / 'results.md').read_text()
  assert '| MetaGater | 1 | diverged | diverged |' in markdown
  assert '| MetaSNIP | 1 | not run | not run |' in markdown
  assert 'MetaGater diverged at round 3 (training)' in markdown
  assert 'MetaSNIP was not run: metagater, whose sparsity it matches, diverged' in markdown
  # The checkpoints hold only finite states: MetaGater's last good one is round 2.
  from mg.harness import checkpoint  # pylint: disable=import-outside-toplevel
  store = checkpoint.Store(str(workdir / 'checkpoints'), keep=3)
  last = store.restore_latest()
  store.close()
  assert last.progress['done']['0']['metagater'][0]['diverged_round'] == 3
  for leaves in last.arrays['states'].values():
    assert all(np.all(np.isfinite(x)) for x in leaves if x.dtype.kind == 'f')
