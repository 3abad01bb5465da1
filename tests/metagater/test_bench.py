"""The benchmark entry point: its rows and the JSON object on its last line."""

import json
import subprocess
import sys

import pytest
from data_helpers import ROOT

FIELDS = ('strategy', 'model', 'tasks_per_round', 'local_steps', 'batch_size',
          'seconds_per_round', 'compile_seconds', 'images_per_second',
          'roofline_images_per_second', 'peak_memory_bytes')


def _bench(*args):
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.bench', '--config=configs/test.py',
       '--rounds=2', '--min_rounds=1', *args],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout, json.loads(proc.stdout.strip().splitlines()[-1])


def test_bench_rows_and_last_line_json():
  """A strategy row, a task-scaling and a K-scaling row, on synthetic inputs."""
  out, result = _bench('--strategies=fused', '--scale_tasks=3', '--scale_steps=2',
                       '--synthetic')
  assert result['backend'] == 'cpu' and result['device'] and result['devices'] == 1
  assert 'synthetic' in result['notes'][0]
  rows = result['rows']
  assert [(r['section'], r['strategy'], r['tasks_per_round'], r['local_steps'])
          for r in rows] == [('strategy', 'fused', 2, 1), ('tasks', 'auto', 3, 1),
                             ('steps', 'auto', 2, 2)]
  for r in rows:
    assert all(field in r for field in FIELDS), r
    assert r['model'] == 'cnn4' and r['batch_size'] == 8 and r['data'] == 'synthetic'
    assert r['seconds_per_round'] > 0 and r['roofline_images_per_second'] > 0
    assert r['peak_memory_bytes'] > 0
    # images per round = tasks x K x batch (MetaGater reads one batch per step).
    images = r['tasks_per_round'] * r['local_steps'] * r['batch_size']
    assert abs(r['images_per_second'] * r['seconds_per_round'] - images) < 1e-6 * images
  # The PyTorch reference when torch imports (optional), else a note saying why not.
  try:
    import torch  # noqa: F401 pylint: disable=g-import-not-at-top,unused-import
    assert all(r['vs_torch'] > 0 and r['torch_seconds_per_round'] > 0 for r in rows)
  except ImportError:
    assert any('torch is not installed' in note for note in result['notes'])
  assert rows[0]['mapping'] == 'fused'
  assert rows[1]['mapping'] == rows[2]['mapping'] == 'loop'  # the CPU default for a CNN
  assert '| strategy   | metagater    | fused' in out  # the table


@pytest.mark.parametrize('flag, message', [
    ('--rounds=0', '--rounds=0: time at least 1 round per row'),
    ('--methods=nope', "--methods: 'nope' is not a method with its own round"),
    ('--scale_tasks=abc', "--scale_tasks=abc: 'abc' is not an integer >= 1"),
    ('--scale_tasks=0', "--scale_tasks=0: '0' is not an integer >= 1"),
    ('--config.meta.roundz=3', "the config has no field 'roundz'"),
])
def test_bad_flags_stop_before_any_work_in_one_line(flag, message):
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.bench', '--config=configs/test.py', flag],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], lines
  assert proc.stdout == ''  # nothing measured
