"""The benchmark entry point on a ReeFL config: a row per tier and one per round."""

import importlib.util
import json
import subprocess
import sys

from data_helpers import ROOT

FIELDS = ('strategy', 'model', 'tasks_per_round', 'local_steps', 'batch_size',
          'seconds_per_round', 'compile_seconds', 'images_per_second',
          'roofline_images_per_second', 'peak_memory_bytes')


def test_reefl_rows_per_tier_and_round():
  """A ReeFL config: one row per tier and one for a round, each against its roofline."""
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.bench', '--config=configs/reefl/test.py',
       '--rounds=1', '--min_rounds=1', '--reefl_client_images=8'],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.loads(proc.stdout.strip().splitlines()[-1])['rows']
  # With PyTorch installed (the optional `torch` extra), the reference round too.
  torch = importlib.util.find_spec('torch') is not None
  assert [(r['section'], r['tier']) for r in rows] == (
      [('tier0', 0), ('tier1', 1), ('round', None)] + [('torch', None)] * torch)
  if torch:
    round_row, torch_row = rows[-2:]
    assert round_row['vs_torch'] == torch_row['seconds_per_round'] / round_row['seconds_per_round']
    assert torch_row['tasks_per_round'] == round_row['tasks_per_round']
    rows = rows[:-1]
  for r in rows:
    assert all(field in r for field in FIELDS), r
    assert r['seconds_per_round'] > 0 and r['roofline_images_per_second'] > 0
  assert rows[-1]['tasks_per_round'] == 4  # fl.clients_per_round
