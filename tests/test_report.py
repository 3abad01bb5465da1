"""Tests for mg.report: results rows, files, figures, metrics log, progress."""

import io
import json
import math

import numpy as np
import pytest

from mg import report

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _repeat(accuracy, target_accuracy, sparsity=None, target_sparsity=None, **kwargs):
  repeat = dict(accuracy=accuracy, target_accuracy=target_accuracy, sparsity=sparsity,
                target_sparsity=target_sparsity, macs_ratio=None, train_time_s=10.0,
                adapt_time_s=0.01, rounds=50, local_steps=2, diverged=False)
  repeat.update(kwargs)
  return repeat


def _strict_json(text):
  def refuse(constant):
    raise AssertionError(f'non-strict JSON constant {constant}')
  return json.loads(text, parse_constant=refuse)


# --- summarize --------------------------------------------------------------

def test_summarize_over_repeats_hand_computed():
  repeats = [
      _repeat(0.8, [0.7, 0.9], 0.2, [0.1, 0.3], macs_ratio=0.5, train_time_s=10.0,
              adapt_time_s=0.01),
      _repeat(0.9, [0.85, 0.95], 0.3, [0.2, 0.4], macs_ratio=0.7, train_time_s=20.0,
              adapt_time_s=0.03),
  ]
  row = report.summarize('metagater', repeats)
  assert tuple(row) == report.ROW_KEYS
  assert row['method'] == 'metagater'
  assert row['accuracy_mean'] == pytest.approx(0.85)
  assert row['accuracy_std'] == pytest.approx(0.05)  # population std of [0.8, 0.9].
  assert row['accuracy_std_over'] == 'repeats'
  assert row['sparsity_mean'] == pytest.approx(0.25)
  # Each repeat has its own targets: the std across one repeat's targets ([0.1, 0.3]
  # and [0.2, 0.4]: 0.1 each), averaged over repeats; the repeat means' std apart.
  assert row['sparsity_std'] == pytest.approx(0.1)
  assert row['sparsity_std_repeats'] == pytest.approx(0.05)
  assert row['accuracy_std_repeats'] == pytest.approx(0.05)
  assert row['accuracy_std_targets'] == pytest.approx(0.075)  # mean of 0.1 and 0.05.
  assert row['repeat_accuracy'] == pytest.approx([0.8, 0.9])
  assert row['weight_sparsity_mean'] is None
  assert row['macs_ratio'] == pytest.approx(0.6)
  assert row['train_time_s'] == pytest.approx(15.0)
  assert row['adapt_time_s'] == pytest.approx(0.02)
  assert (row['rounds'], row['local_steps'], row['repeats']) == (50, 2, 2)
  assert row['diverged'] is False and row['diverged_round'] is None
  assert row['target_accuracy'] == pytest.approx([0.7, 0.9, 0.85, 0.95])
  assert row['target_sparsity'] == pytest.approx([0.1, 0.3, 0.2, 0.4])


def test_summarize_single_repeat_uses_std_over_targets():
  row = report.summarize('fedavg', [_repeat(np.float32(0.8), np.array([0.6, 0.8, 1.0]))])
  assert row['accuracy_mean'] == pytest.approx(0.8)
  assert row['accuracy_std'] == pytest.approx(math.sqrt(0.08 / 3), rel=1e-6)
  assert row['accuracy_std_over'] == 'targets'
  assert row['sparsity_mean'] is None and row['sparsity_std'] is None
  assert row['target_sparsity'] is None and row['macs_ratio'] is None
  assert row['repeats'] == 1
  json.dumps(row, allow_nan=False)  # plain Python types only.


def test_weight_sparsity_is_reported_apart_from_channel_sparsity():
  repeats = [_repeat(0.8, [0.7, 0.9], 0.5, [0.5, 0.5], sparsity_kind='weight'),
             _repeat(0.9, [0.8, 1.0], 0.4, [0.4, 0.4], sparsity_kind='weight')]
  row = report.summarize('metasnip', repeats)
  assert row['sparsity_mean'] is None and row['sparsity_std'] is None
  assert row['weight_sparsity_mean'] == pytest.approx(0.45)
  assert row['weight_sparsity_std'] == pytest.approx(0.0)
  from mg.report import tables
  md = tables.markdown_table([row], tables.TABLE2)
  assert 'Channel sparsity (%)' in md and 'Weight sparsity (%)' in md
  assert '| — | 45.00 ± 0.00 |' in md


def test_summarize_diverged_repeat_withholds_numbers():
  repeats = [_repeat(0.8, [0.7, 0.9], 0.2, [0.1, 0.3]),
             _repeat(None, None, diverged=True, diverged_round=7)]
  row = report.summarize('perfedavg_hf', repeats)
  assert row['diverged'] is True and row['diverged_round'] == 7
  for key in ('accuracy_mean', 'accuracy_std', 'sparsity_mean', 'sparsity_std', 'macs_ratio',
              'train_time_s', 'adapt_time_s', 'target_accuracy', 'target_sparsity'):
    assert row[key] is None, key
  assert (row['rounds'], row['local_steps'], row['repeats']) == (50, 2, 2)


def test_summarize_nan_accuracy_counts_as_diverged():
  row = report.summarize('fedavg', [_repeat(float('nan'), [float('nan')])])
  assert row['diverged'] is True and row['accuracy_mean'] is None


def test_summarize_rejects_bad_input():
  with pytest.raises(ValueError, match='at least one repeat'):
    report.summarize('fedavg', [])
  with pytest.raises(ValueError, match="no 'accuracy'"):
    report.summarize('fedavg', [_repeat(None, [])])


# --- write_results / tables ---------------------------------------------------

PARTITION = {'num_tasks': 25, 'num_train_tasks': 20, 'num_targets': 5,
             'samples_per_task': {'min': 221, 'max': 2792, 'mean': 1000.5, 'total': 25012}}


def _rows():
  return [
      report.summarize('fedavg', [_repeat(0.8, [0.8]), _repeat(0.9, [0.9])]),
      report.summarize('metagater', [
          _repeat(0.9, [0.85, 0.95], 0.25, [0.2, 0.3], macs_ratio=0.6, adapt_time_s=0.0123,
                  train_time_s=123.45)]),
      report.summarize('perfedavg_fo', [_repeat(None, None, diverged=True, diverged_round=3)]),
  ]


def test_write_results_json_and_markdown(tmp_path):
  markdown = report.write_results(tmp_path, _rows(), PARTITION,
                                  extra={'config': 'cifar10', 'loss': float('nan')})
  payload = _strict_json((tmp_path / 'results.json').read_text())
  assert payload['partition'] == PARTITION
  assert payload['config'] == 'cifar10' and payload['loss'] is None
  required = ('method', 'accuracy_mean', 'accuracy_std', 'sparsity_mean', 'sparsity_std',
              'macs_ratio', 'train_time_s', 'adapt_time_s', 'rounds', 'local_steps', 'repeats')
  for row in payload['rows']:
    assert set(required) <= set(row)
  assert [row['method'] for row in payload['rows']] == ['fedavg', 'metagater', 'perfedavg_fo']
  assert payload['rows'][0]['accuracy_mean'] == pytest.approx(0.85)
  assert (tmp_path / 'results.md').read_text() == markdown
  assert sorted(p.name for p in tmp_path.iterdir()) == ['results.json', 'results.md']

  table1, table2 = markdown.split('Table 1')[1].split('Table 2')
  # Std across targets: one target per FedAvg repeat (0), MetaGater's [0.85, 0.95] (5).
  assert '| FedAvg | 2 | 85.00 ± 5.00 | 0.00 | 10.0 |' in table1
  assert '| MetaGater | 2 | 90.00 ± 5.00† | 5.00 | 123.5 |' in table1
  assert '| Per-FedAvg (FO) | 2 | diverged | diverged | diverged |' in table1
  assert '| FedAvg | 85.00 ± 5.00 | — | — | — | 10.00 |' in table2
  assert '| MetaGater | 90.00 ± 5.00† | 25.00 ± 5.00 | — | 60.00 | 12.30 |' in table2
  assert '| Per-FedAvg (FO) | diverged | diverged | diverged | diverged | diverged |' in table2
  assert 'Per-FedAvg (FO) diverged at round 3' in markdown
  assert '- Tasks: 25 (20 meta-training, 5 targets)' in markdown
  assert '- Samples per task: min 221, max 2792, mean 1000.5; total 25012' in markdown
  assert '- config: cifar10' in markdown


def test_write_results_tolerates_sparse_partition_and_fills_rows(tmp_path):
  markdown = report.write_results(tmp_path, [{'method': 'custom', 'accuracy_mean': 0.5}],
                                  {'num_targets': 3})
  row = _strict_json((tmp_path / 'results.json').read_text())['rows'][0]
  assert tuple(row)[:len(report.ROW_KEYS)] == report.ROW_KEYS
  assert row['sparsity_std'] is None
  assert '- Tasks: 3 targets' in markdown and '| custom | — | 50.00 | — |' in markdown
  with pytest.raises(ValueError, match='rows'):
    report.write_results(tmp_path, [], None, extra={'rows': 1})


def test_display_names_and_terminal_table():
  assert report.display_name('metagater_nogate') == 'MetaGater w/o gating'
  assert report.display_name('metagater (alpha=1)') == 'MetaGater (alpha=1)'
  assert report.display_name('perfedavg_hf') == 'Per-FedAvg (HF)'
  assert report.display_name('mystery') == 'mystery'
  lines = report.format_table(_rows()).splitlines()
  assert lines[0].split()[:2] == ['Method', 'Local'] and set(lines[1]) <= {'-', ' '}
  assert lines[2].startswith('FedAvg') and '85.00 +- 5.00' in lines[2]
  assert '25.00 +- 5.00' in lines[3] and '12.30' in lines[3]
  assert lines[4].startswith('Per-FedAvg (FO)') and lines[4].count('diverged') == 6


# --- plots --------------------------------------------------------------------

def test_plot_curves_writes_png(tmp_path):
  curves = {
      'metagater': {'round': [0, 10, 20], 'accuracy_mean': [0.5, 0.7, 0.8],
                    'accuracy_std': np.array([0.05, 0.04, 0.03])},
      'metagater (alpha=1)': {'round': [0, 10, 20], 'accuracy_mean': [0.5, None, 0.6]},
  }
  path = report.plot_curves(tmp_path / 'curves.png', curves, title='CIFAR-10')
  data = path.read_bytes()
  assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
  with pytest.raises(ValueError, match='2 accuracies'):
    report.plot_curves(tmp_path / 'bad.png', {'x': {'round': [1, 2, 3], 'accuracy_mean': [1, 2]}})


def test_plot_sparsity_writes_png_and_skips_ungated(tmp_path):
  path = report.plot_sparsity(tmp_path / 'sparsity.png',
                              {'fedavg': None, 'metagater': [0.1, 0.3, 0.25, float('nan')],
                               'metasnip': [0.2, 0.2, 0.2]})
  assert path.read_bytes().startswith(PNG_SIGNATURE)
  assert report.plot_sparsity(tmp_path / 'none.png', {'fedavg': None}) is None
  assert not (tmp_path / 'none.png').exists()


# --- metrics log --------------------------------------------------------------

def test_metrics_log_round_trip_with_numpy_values(tmp_path):
  with report.MetricsLog(tmp_path) as log:
    log.write('metagater', np.int64(1), loss=np.float32(0.5), gates=np.array([1.0, 0.0]),
              ok=np.bool_(True), bad=float('inf'))
    log.write('fedavg', 2, accuracy=0.75)
  with report.MetricsLog(tmp_path / 'metrics.jsonl') as log:  # reopening appends.
    log.write('metagater', 3, loss=np.float64(0.25))
  records = report.read_metrics(tmp_path)
  assert records == [
      {'method': 'metagater', 'round': 1, 'loss': 0.5, 'gates': [1.0, 0.0], 'ok': True,
       'bad': None},
      {'method': 'fedavg', 'round': 2, 'accuracy': 0.75},
      {'method': 'metagater', 'round': 3, 'loss': 0.25},
  ]
  assert [r['round'] for r in report.read_metrics(tmp_path, method='metagater')] == [1, 3]
  with pytest.raises(ValueError, match='closed'):
    log.write('fedavg', 4)


def test_metrics_log_survives_a_cut_off_last_line(tmp_path):
  file = tmp_path / 'metrics.jsonl'
  file.write_text('{"method": "fedavg", "round": 1}\n{"method": "fed')
  assert report.read_metrics(file) == [{'method': 'fedavg', 'round': 1}]
  with report.MetricsLog(file) as log:
    log.write('fedavg', 2)
  assert [r['round'] for r in report.read_metrics(file)] == [1, 2]


# --- progress -----------------------------------------------------------------

def test_progress_without_terminal_prints_periodic_lines(capsys):
  bar = report.progress(20, 'metagater')
  for r in range(20):
    bar.set_postfix({'loss': np.float32(1.0 / (r + 1)), 'acc': 0.5})
    bar.update()
  bar.close()
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 10  # one every 10% of 20 rounds.
  assert lines[0].startswith('metagater: round 2/20  loss=0.5  acc=0.5  [')
  assert lines[-1].startswith('metagater: round 20/20  loss=0.05  acc=0.5')
  assert all('\r' not in line for line in lines)


def test_progress_iterable_and_disabled(capsys):
  seen = []
  bar = report.progress(range(5), 'fedavg', log_fraction=0.5)
  for r in bar:
    seen.append(r)
    bar.set_postfix(loss=float('nan'))
  assert seen == [0, 1, 2, 3, 4]
  lines = capsys.readouterr().err.splitlines()
  assert [line.split('  ')[0] for line in lines] == [
      'fedavg: round 3/5', 'fedavg: round 5/5']
  assert 'loss=nan' in lines[-1]
  quiet = report.progress(5, 'x', enabled=False)
  quiet.set_postfix(a=1)
  quiet.update(5)
  quiet.close()
  assert capsys.readouterr().err == ''


def test_progress_on_terminal_uses_a_bar():
  class Terminal(io.StringIO):
    def isatty(self):
      return True
  stream = Terminal()
  bar = report.progress(4, 'metasnip', stream=stream)
  bar.update(2)
  bar.set_postfix(acc=0.5)
  bar.close()
  text = stream.getvalue()
  assert '\r' in text and 'metasnip' in text and 'acc=0.5' in text and '4/4' not in text
