"""The entry point end to end, and its one-line errors for bad input (issue 2)."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from data_helpers import ROOT

ROW_KEYS = ('method', 'accuracy_mean', 'accuracy_std', 'sparsity_mean', 'sparsity_std',
            'macs_ratio', 'train_time_s', 'adapt_time_s', 'rounds', 'local_steps',
            'repeats')


def _main(*args, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'experiments.main', *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=timeout)


def test_test_config_runs_end_to_end():
  """Every method, every output, in the default workdir (printed, under runs/)."""
  proc = _main('--config=configs/test.py')
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith('workdir: '))
  assert line.split(': ', 1)[1].startswith('runs' + os.sep)
  workdir = pathlib.Path(ROOT, line.split(': ', 1)[1])
  try:
    _check_outputs(proc, workdir)
  finally:
    shutil.rmtree(workdir)


def _check_outputs(proc, workdir):
  for name in ('config.json', 'metrics.jsonl', 'results.json', 'results.md',
               'curves.png', 'sparsity.png'):
    assert (workdir / name).stat().st_size > 0, name
  results = json.loads((workdir / 'results.json').read_text())
  methods = [row['method'] for row in results['rows']]
  assert methods == ['fedavg', 'perfedavg_fo', 'perfedavg_hf', 'metagater_nogate',
                     'metagater', 'metasnip', 'metasnip_filters']
  for row in results['rows']:
    assert set(ROW_KEYS) <= set(row)
    assert 0.0 <= row['accuracy_mean'] <= 1.0
    assert row['rounds'] == 2 and row['repeats'] == 1
  gated = results['rows'][methods.index('metagater')]
  # MACs count the gate modules too: with no channel off the ratio is a little above 1.
  assert 0.0 <= gated['sparsity_mean'] <= 1.0 and 0.0 < gated['macs_ratio'] < 1.02
  assert results['partition']['num_tasks'] == 8
  events = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert all('method' in e and 'round' in e for e in events)
  assert {e['method'] for e in events} >= set(methods)
  assert 'partition (seed 0): 8 tasks' in proc.stdout
  assert f'results written to {os.path.relpath(workdir, ROOT)}' in proc.stdout


@pytest.mark.parametrize('args, message', [
    (['--config.meta.roundz=3'], 'roundz'),
    (['--config.data.name=imagenet'], "data.name='imagenet'"),
    (['--config.data.source=raw', '--config.data.name=mnist',
      '--config.data.dir=/nonexistent/mnist'], '/nonexistent/mnist'),
    (['--config.data.num_tasks=60', '--config.data.min_samples=200',
      '--config.data.max_samples=300'], 'class'),
    (['--config.data.source=tfds', '--config.data.name=mnist',
      '--config.data.dir=/tmp/mg-no-tfds-here'], 'tfds build mnist'),
    (['--config.meta.tasks_per_round=7'], 'meta.tasks_per_round=7'),
    (['--config.methods=("metasnip",)'], 'metagater'),
    (['--config.checkpoint_every=0'], 'checkpoint_every=0: expected an integer >= 1'),
    (['--config.data.num_tasks=10', '--config.data.classes_per_task=1',
      '--config.data.min_samples=175', '--config.data.max_samples=175'],
     'but class 8 has only 174 samples'),
])
def test_bad_input_gives_one_clear_error(tmp_path, args, message):
  workdir = tmp_path / 'bad'
  proc = _main('--config=configs/test.py', f'--workdir={workdir}', *args, timeout=300)
  assert proc.returncode != 0
  assert message in proc.stderr, proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert not workdir.exists()  # the workdir this refused command made is removed again


def test_a_bad_config_variant_is_one_line():
  """The config file's own error, without the traceback ml_collections wraps it in."""
  proc = _main('--config=configs/reefl/mnist.py:fast', timeout=300)
  assert proc.returncode != 0
  assert "configs/reefl/mnist.py:fast: expected 'full' or 'quick'" in proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert len(proc.stderr.strip().splitlines()) == 2, proc.stderr  # the error and the hint


def test_a_missing_config_file_is_one_line():
  proc = _main('--config=configs/nope.py', timeout=300)
  assert proc.returncode != 0
  assert 'cannot load --config=configs/nope.py' in proc.stderr
  assert 'No such file or directory' in proc.stderr
  assert 'Traceback' not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_printed_resume_command_resumes_a_resume_false_run():
  """A run started with resume=False is resumed by the command it prints, not restarted."""
  script = ("import sys; sys.argv = ['main', '--config=configs/test.py', "
            "'--config.resume=False', '--config.meta.rounds=3']; "
            "from experiments import main; print(main.resume_command('W'))")
  proc = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == ('python -m experiments.main --config=configs/test.py '
                                 '--config.meta.rounds=3 --workdir=W')
