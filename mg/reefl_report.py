"""ReeFL's outputs: ``results.json``, ``results.md`` and the figures.

Rows (one per regime and method, over repeats)::

  {method, regime, accuracy_mean, accuracy_std,       # mean over exits, across seeds
   exit_accuracy_mean: [...], exit_accuracy_std: [...],
   ensemble_accuracy_mean, macs_per_exit: [...], upload_bytes_per_round,
   train_time_s, rounds, repeats, diverged,
   validation_accuracy_mean, validation_accuracy_std,  # the same on the validation
   validation_exit_accuracy_mean: [...]}               # clients (None without them)

The test-split figures are the results; the validation figures are there to
choose settings by (``mg.reefl_sweep``), never the test split's.

Figures: ``curves.png`` (mean-over-exits accuracy against rounds),
``exits.png`` (accuracy per exit per method), ``teacher.png`` (which exit was
the KD teacher, per tier, for the methods with a dynamic teacher).
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from mg.report import plot_curves
from mg.report.serialize import atomic_write_text, to_jsonable

NAMES = {'reefl': 'ReeFL', 'reefl_lastkd': 'ReeFL (last-exit KD)',
         'reefl_nokd': 'ReeFL w/o KD', 'reefl_nomod': 'ReeFL w/o modulation',
         'reefl_maximum': 'ReeFL, all full budget', 'exclusivefl': 'ExclusiveFL',
         'inclusivefl': 'InclusiveFL', 'inclusivefl_nomd': 'InclusiveFL w/o MD',
         'depthfl': 'DepthFL', 'depthfl_feddyn': 'DepthFL (FedDyn)', 'scalefl': 'ScaleFL'}


def _label(method: str, regime: str, regimes: set) -> str:
  name = NAMES.get(method, method)
  return name if len(regimes) == 1 else f'{name} [{regime}]'


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


def pct(v) -> str:
  """An accuracy in %, or a dash for None (a diverged run)."""
  return '—' if v is None else f'{100 * v:.2f}'


def pm(mean, std) -> str:
  """``mean ± std`` in %, or the mean alone for one repeat (no spread to quote)."""
  return pct(mean) if std is None else f'{pct(mean)} ± {pct(std)}'


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
    sub = [r for r in rows if r['regime'] == regime]
    n_exits = len(sub[0]['macs_per_exit'])
    lines += [f'## Regime: {regime}', '']
    head = (['Method', 'Mean'] + [f'Exit {i + 1}' for i in range(n_exits)]
            + ['Ensemble', 'Validation', 'Trainable/tier (k)', 'Upload/round (MB)',
               'Train time (s)'])
    lines.append('| ' + ' | '.join(head) + ' |')
    lines.append('| --- |' + ' ---: |' * (len(head) - 1))
    for r in sub:
      if r['accuracy_mean'] is None:
        cells = [f"diverged (round {r['diverged']})"] + [''] * (n_exits + 2)
      else:
        spread = r['repeats'] > 1
        std = lambda v: v if spread else None
        cells = ([pm(r['accuracy_mean'], std(r['accuracy_std']))]
                 + [pm(m, std(s)) for m, s in zip(r['exit_accuracy_mean'],
                                                   r['exit_accuracy_std'])]
                 + [pm(r['ensemble_accuracy_mean'], std(r.get('ensemble_accuracy_std'))),
                    pct(r.get('validation_accuracy_mean'))])
      cells += ['/'.join(f'{n / 1e3:.0f}' for n in r['trainable_per_tier']),
                f"{r['upload_bytes_per_round'] / 1e6:.2f}", f"{r['train_time_s']:.0f}"]
      lines.append('| ' + ' | '.join([NAMES.get(r['method'], r['method'])] + cells) + ' |')
    lines.append('')
    # Per method: ScaleFL's narrower tiers and the head baselines' own heads differ
    # from ReeFL's in cost and size.
    lines.append('| Method | MACs per example to each exit (M) | Parameters held per tier (k) '
                 '| Trainable = uploaded per tier (k) |')
    lines.append('| --- | ---: | ---: | ---: |')
    for r in sub:
      lines.append(f"| {NAMES.get(r['method'], r['method'])} | "
                   + ' / '.join(f'{m / 1e6:.2f}' for m in r['macs_per_exit']) + ' | '
                   + ' / '.join(f'{n / 1e3:.1f}' for n in r['held_per_tier']) + ' | '
                   + ' / '.join(f'{n / 1e3:.1f}' for n in r['trainable_per_tier']) + ' |')
    lines.append('')
  lines.append(f'Wall-clock time of the whole run: {wall_time_s:.0f} s.')
  return '\n'.join(lines) + '\n'


def plot_exits(path: str, rows: Sequence[dict], regimes: set) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for r in rows:
    if r['exit_accuracy_mean'] is None:
      continue
    x = np.arange(1, len(r['exit_accuracy_mean']) + 1)
    ax.errorbar(x, 100 * np.array(r['exit_accuracy_mean']), yerr=100 * np.array(r['exit_accuracy_std']),
                marker='o', capsize=3, label=_label(r['method'], r['regime'], regimes))
  ax.set_xlabel('Exit')
  ax.set_ylabel('Accuracy (%)')
  ax.set_xticks(np.arange(1, len(rows[0]['macs_per_exit']) + 1))
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_teacher(path: str, results: Sequence[dict], regimes: set) -> bool:
  """Fraction of local steps at which each exit was the teacher, per tier."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  groups: dict[str, dict[int, np.ndarray]] = {}
  for r in results:
    if r['method'] not in ('reefl', 'reefl_nomod'):
      continue
    label = _label(r['method'], r['regime'], regimes)
    g = groups.setdefault(label, {})
    for t, c in r['teacher'].items():
      g[int(t)] = g.get(int(t), 0) + np.asarray(c, float)
  if not groups:
    return False
  fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.6), squeeze=False)
  for ax, (label, hist) in zip(axes[0], groups.items()):
    tiers = sorted(t for t in hist if len(hist[t]) > 1)
    width = 0.8 / max(len(tiers), 1)
    for i, t in enumerate(tiers):
      frac = hist[t] / max(hist[t].sum(), 1)
      ax.bar(np.arange(1, len(frac) + 1) + (i - (len(tiers) - 1) / 2) * width, frac, width,
             label=f'tier {t + 1}')
    ax.set_title(label)
    ax.set_xticks(np.arange(1, max(len(h) for h in hist.values()) + 1))
    ax.set_xlabel('Teacher exit')
    ax.set_ylabel('Fraction of local steps')
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return True


def write_outputs(workdir: str, results: Sequence[dict], *, partition: dict,
                  wall_time_s: float) -> dict:
  """Writes results.json, results.md, curves.png, exits.png, teacher.png; returns the json."""
  rows = summarize(results)
  regimes = {r['regime'] for r in rows}
  doc = {'rows': rows, 'partition': partition, 'wall_time_s': wall_time_s,
         'tiers': {f"{r['regime']}/{r['method']}": r['tiers'] for r in results},
         'teacher': {f"{r['regime']}/{r['method']}/{r['repeat']}": r['teacher'] for r in results},
         'curves': {f"{r['regime']}/{r['method']}/{r['repeat']}": r['curve'] for r in results}}
  atomic_write_text(os.path.join(workdir, 'results.json'),
                    json.dumps(to_jsonable(doc), indent=1))
  atomic_write_text(os.path.join(workdir, 'results.md'),
                    markdown(rows, partition, wall_time_s))
  curves = {}
  for row in rows:
    reps = [r for r in results if r['regime'] == row['regime'] and r['method'] == row['method']
            and r['curve']]
    if not reps:
      continue
    n = min(len(r['curve']) for r in reps)
    acc = np.array([[c['accuracy'] for c in r['curve'][:n]] for r in reps])
    curves[_label(row['method'], row['regime'], regimes)] = {
        'round': [c['round'] for c in reps[0]['curve'][:n]],
        'accuracy_mean': acc.mean(0).tolist(),
        'accuracy_std': acc.std(0).tolist() if len(reps) > 1 else None}
  if curves:
    plot_curves(os.path.join(workdir, 'curves.png'), curves,
                title='Mean accuracy over exits')
  if any(r['exit_accuracy_mean'] for r in rows):
    plot_exits(os.path.join(workdir, 'exits.png'), rows, regimes)
  plot_teacher(os.path.join(workdir, 'teacher.png'), results, regimes)
  return doc
