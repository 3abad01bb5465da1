"""ReeFL's outputs: ``results.json``, ``results.md`` and the figures.

Rows (one per regime and method, over repeats)::

  {method, regime, accuracy_mean, accuracy_std,       # mean over exits, across seeds
   exit_accuracy_mean: [...], exit_accuracy_std: [...],
   ensemble_accuracy_mean, macs_per_exit: [...], upload_bytes_per_round,
   train_time_s, rounds, repeats, diverged,
   validation_accuracy_mean, validation_accuracy_std,  # the same on the validation
   validation_exit_accuracy_mean: [...]}               # clients (None without them)

The test-split figures are the results; the validation figures are there to
choose settings by (``mg.reefl.sweep``), never the test split's.

Figures: ``curves.png`` (mean-over-exits accuracy against rounds),
``exits.png`` (accuracy per exit per method), ``teacher.png`` (which exit was
the KD teacher, per tier, for the methods with a dynamic teacher).
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from mg import report
from mg.reefl import methods  # noqa: F401  (registers the display names)
from mg.report.serialize import atomic_write_text, to_jsonable


def summarize(results: Sequence[dict]) -> list[dict]:
  """One row per (regime, method) from the per-repeat results."""
  groups: dict[tuple, list] = {}
  for r in results:
    groups.setdefault((r['regime'], r['method']), []).append(r)
  rows = []
  for (regime, method), reps in groups.items():
    ok = [r for r in reps if r['exit_accuracy'] is not None]
    exits = np.array([r['exit_accuracy'] for r in ok]) if ok else None
    means = exits.mean(axis=1) if ok else None
    val = [r['validation_exit_accuracy'] for r in ok if r.get('validation_exit_accuracy')]
    val = np.array(val) if ok and len(val) == len(ok) else None
    rows.append({
        'method': method, 'regime': regime,
        'accuracy_mean': float(means.mean()) if ok else None,
        'accuracy_std': float(means.std()) if ok else None,
        'exit_accuracy_mean': exits.mean(axis=0).tolist() if ok else None,
        'exit_accuracy_std': exits.std(axis=0).tolist() if ok else None,
        'ensemble_accuracy_mean': float(np.mean([r['ensemble_accuracy'] for r in ok])) if ok else None,
        'ensemble_accuracy_std': float(np.std([r['ensemble_accuracy'] for r in ok])) if ok else None,
        'macs_per_exit': reps[0]['macs_per_exit'],
        'held_per_tier': [t['held'] for t in reps[0].get('tiers', [])],
        'trainable_per_tier': [t['trainable'] for t in reps[0].get('tiers', [])],
        'upload_bytes_per_round': float(np.mean([r['upload_bytes_per_round'] for r in reps])),
        'train_time_s': float(np.mean([r['train_time_s'] for r in reps])),
        'rounds': reps[0]['rounds'], 'repeats': len(reps),
        'diverged': next((r['diverged'] for r in reps if r['diverged']), None),
        'validation_accuracy_mean': float(val.mean(axis=1).mean()) if val is not None else None,
        'validation_accuracy_std': float(val.mean(axis=1).std()) if val is not None else None,
        'validation_exit_accuracy_mean': val.mean(axis=0).tolist() if val is not None else None,
    })
  return rows


def _label(method: str, regime: str, regimes: set) -> str:
  """A method's key in the figures: its name, with the regime when there are several."""
  return method if len(regimes) == 1 else f'{method} [{regime}]'


def _columns(n_exits: int) -> tuple:
  """The accuracy table's columns (``mg.report.tables`` format)."""
  spread = lambda r, key: r.get(key) if r['repeats'] > 1 else None
  acc = [('Method', lambda r, m: report.display_name(r['method']), False),
         ('Mean', lambda r, m: report.percent_pm(r['accuracy_mean'],
                                                  spread(r, 'accuracy_std')), True)]
  acc += [(f'Exit {i + 1}', lambda r, m, i=i: report.percent_pm(
      r['exit_accuracy_mean'][i], None if r['repeats'] == 1 else r['exit_accuracy_std'][i]),
           True) for i in range(n_exits)]
  acc += [('Ensemble', lambda r, m: report.percent_pm(
              r['ensemble_accuracy_mean'], spread(r, 'ensemble_accuracy_std')), True),
          ('Validation', lambda r, m: report.percent(r.get('validation_accuracy_mean')), True),
          ('Trainable/tier (k)', lambda r, m: '/'.join(
              f'{n / 1e3:.0f}' for n in r['trainable_per_tier']), False),
          ('Upload/round (MB)', lambda r, m: f"{r['upload_bytes_per_round'] / 1e6:.2f}", False),
          ('Train time (s)', lambda r, m: f"{r['train_time_s']:.0f}", False)]
  return tuple(acc)


# Per method: ScaleFL's narrower tiers and the head baselines' own heads differ
# from ReeFL's in cost and size.
_COST = (
    ('Method', lambda r, m: report.display_name(r['method']), False),
    ('MACs per example to each exit (M)',
     lambda r, m: ' / '.join(f'{x / 1e6:.2f}' for x in r['macs_per_exit']), False),
    ('Parameters held per tier (k)',
     lambda r, m: ' / '.join(f'{n / 1e3:.1f}' for n in r['held_per_tier']), False),
    ('Trainable = uploaded per tier (k)',
     lambda r, m: ' / '.join(f'{n / 1e3:.1f}' for n in r['trainable_per_tier']), False),
)


def markdown(rows: Sequence[dict], partition: dict, wall_time_s: float) -> str:
  """``results.md``: per regime, the accuracy table and each method's cost and size."""
  lines = ['# ReeFL results', '']
  lines.append(f"{partition['clients']} clients (Dirichlet alpha = {partition['alpha']}, "
               f"{partition['client_size_min']}-{partition['client_size_max']} training images "
               f"each, {partition['classes_per_client_mean']:.1f} classes on average), "
               f"global test split of {partition['test_images']} images. Accuracy at each "
               'exit on the global test split (%), mean ± std across repeats (the mean alone '
               'for one repeat); "Mean" is the mean over exits; "Validation" the same mean on the '
               f"{partition.get('validation_clients', 0)} validation clients' "
               f"{partition.get('validation_images', 0)} images (never trained on; "
               'settings are chosen on it, never on the test split).')
  lines.append('')
  for regime in dict.fromkeys(r['regime'] for r in rows):
    # A row reads 'diverged' when no repeat finished (else: its finished repeats).
    sub = [dict(r, diverged=r['accuracy_mean'] is None) for r in rows
           if r['regime'] == regime]
    lines += [f'## Regime: {regime}', '',
              report.markdown_table(sub, _columns(len(sub[0]['macs_per_exit']))), '',
              report.markdown_table(sub, _COST), '']
  lines.append(f'Wall-clock time of the whole run: {wall_time_s:.0f} s.')
  return '\n'.join(lines) + '\n'


def teacher_histograms(results: Sequence[dict], regimes: set) -> dict:
  """``{method: {'tier k': fractions}}``: how often each exit was the KD teacher.

  For the methods with a dynamic teacher; the fraction of a tier's local steps
  at which each exit was the teacher, summed over repeats.
  """
  groups: dict[str, dict[int, np.ndarray]] = {}
  for r in results:
    if r['method'] not in ('reefl', 'reefl_nomod'):
      continue
    g = groups.setdefault(_label(r['method'], r['regime'], regimes), {})
    for t, c in r['teacher'].items():
      g[int(t)] = g.get(int(t), 0) + np.asarray(c, float)
  return {label: {f'tier {t + 1}': (hist[t] / max(hist[t].sum(), 1)).tolist()
                  for t in sorted(hist) if len(hist[t]) > 1}
          for label, hist in groups.items()}


def write_outputs(workdir: str, results: Sequence[dict], *, partition: dict,
                  wall_time_s: float, resumes=()) -> dict:
  """Writes results.json, results.md, curves.png, exits.png, teacher.png; returns the json."""
  rows = summarize(results)
  regimes = {r['regime'] for r in rows}
  doc = {'rows': rows, 'partition': partition, 'wall_time_s': wall_time_s,
         'resumes': list(resumes),
         'tiers': {f"{r['regime']}/{r['method']}": r['tiers'] for r in results},
         'teacher': {f"{r['regime']}/{r['method']}/{r['repeat']}": r['teacher'] for r in results},
         'curves': {f"{r['regime']}/{r['method']}/{r['repeat']}": r['curve'] for r in results}}
  atomic_write_text(os.path.join(workdir, 'results.json'),
                    json.dumps(to_jsonable(doc), indent=1))
  atomic_write_text(os.path.join(workdir, 'results.md'),
                    markdown(rows, partition, wall_time_s))
  curves = {}
  for row in rows:
    reps = [r['curve'] for r in results if r['regime'] == row['regime']
            and r['method'] == row['method'] and r['curve']]
    if reps:
      curves[_label(row['method'], row['regime'], regimes)] = report.mean_curve(
          [{'round': [c['round'] for c in curve], 'accuracy': [c['accuracy'] for c in curve]}
           for curve in reps], value='accuracy', spread=None)
  if curves:
    report.plot_curves(os.path.join(workdir, 'curves.png'), curves,
                       title='Mean accuracy over exits')
  exits = {_label(r['method'], r['regime'], regimes): {'mean': r['exit_accuracy_mean'],
                                                       'std': r['exit_accuracy_std']}
           for r in rows if r['exit_accuracy_mean'] is not None}
  if exits:
    report.plot_per_exit(os.path.join(workdir, 'exits.png'), exits)
  teacher = teacher_histograms(results, regimes)
  if teacher:
    report.plot_grouped_bars(os.path.join(workdir, 'teacher.png'), teacher,
                             xlabel='Teacher exit', ylabel='Fraction of local steps')
  return doc
