"""A sweep's report: one row per member, the best configuration per method,
and target accuracy against each swept hyperparameter.

Files written to the workdir:

* ``sweep.json``: ``rows`` (method, hyperparameters, seed, final mean target
  accuracy, per-target accuracies, sparsity, training curve, losses,
  diverged / diverged_round / diverged_stage), ``best`` per method, the swept fields, timings;
* ``sweep.md``: the best configurations and every row, best first;
* ``sweep_<field>.png`` for each swept hyperparameter: accuracy (%) of every
  member (dots) and of the best setting of the other fields at each value
  (line, mean over seeds).

A configuration is its method and hyperparameters; its score is the mean over
its seeds of the final mean target accuracy, and a configuration with any
diverged seed is never the best.
"""

from __future__ import annotations

import io
import json
import math
import os
from typing import Sequence

import numpy as np

from mg import report
from mg.report import serialize
from mg.report.tables import display_name


def configuration(row: dict) -> tuple:
  """The hashable identity of a row's configuration (method and hyperparameters)."""
  return (row['method'],) + tuple(sorted(row['hparams'].items()))


def best_per_method(rows: Sequence[dict]) -> dict:
  """``{method: summary}`` of the configuration with the best mean accuracy over seeds."""
  groups = {}
  for row in rows:
    groups.setdefault(configuration(row), []).append(row)
  best = {}
  for (method, *_), group in groups.items():
    if any(r['diverged'] for r in group):
      continue
    accuracy = [r['accuracy'] for r in group]
    sparsity = [r['sparsity'] for r in group if r['sparsity'] is not None]
    summary = dict(method=method, hparams=group[0]['hparams'],
                   seeds=[r['seed'] for r in group],
                   accuracy_mean=float(np.mean(accuracy)),
                   accuracy_std=float(np.std(accuracy)),
                   sparsity_mean=float(np.mean(sparsity)) if sparsity else None)
    if method not in best or summary['accuracy_mean'] > best[method]['accuracy_mean']:
      best[method] = summary
  return best


def _percent(value) -> str:
  return '—' if value is None else f'{100.0 * value:.2f}'


def _value(value) -> str:
  return f'{value:g}' if isinstance(value, float) else str(value)


def markdown(rows: Sequence[dict], best: dict, fields: Sequence[str], title: str) -> str:
  """``sweep.md``: best configurations, then every row sorted by accuracy."""
  hp_fields = [f for f in fields if f != 'seed']
  lines = [f'# {title}', '', '## Best configuration per method', '',
           '| Method | Hyperparameters | Seeds | Accuracy (%) | Sparsity (%) |',
           '|---|---|---:|---:|---:|']
  for method, b in best.items():
    settings = ', '.join(f'{k}={_value(v)}' for k, v in b['hparams'].items())
    lines.append(f"| {display_name(method)} | {settings} | {len(b['seeds'])} | "
                 f"{100 * b['accuracy_mean']:.2f} ± {100 * b['accuracy_std']:.2f} | "
                 f"{_percent(b['sparsity_mean'])} |")
  missing = sorted({r['method'] for r in rows} - set(best))
  for method in missing:
    lines.append(f'| {display_name(method)} | every configuration diverged | | | |')
  lines += ['', '## Every member', '',
            '| Method | ' + ' | '.join(hp_fields) + ' | seed | Accuracy (%) | Sparsity (%) |',
            '|---|' + '---:|' * (len(hp_fields) + 3)]
  ordered = sorted(rows, key=lambda r: (r['method'], r['diverged'], -(r['accuracy'] or 0.0)))
  for r in ordered:
    values = [_value(r['hparams'].get(f, '—')) for f in hp_fields]
    if r['diverged']:
      stage = f", {r['diverged_stage']}" if r.get('diverged_stage') else ''
      scores = [f"diverged (round {r['diverged_round']}{stage})", '—']
    else:
      scores = [_percent(r['accuracy']), _percent(r['sparsity'])]
    lines.append('| ' + ' | '.join([display_name(r['method']), *values, str(r['seed']),
                                    *scores]) + ' |')
  lines += ['', 'Accuracy: mean query accuracy over the target tasks after fast '
            'adaptation, at the last round (best: mean ± std over seeds).']
  return '\n'.join(lines) + '\n'


def plot_field(path, rows: Sequence[dict], field: str, title: str):
  """Accuracy (%) against ``field``: members as dots, best per value as a line."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  figure = Figure(figsize=(6.0, 4.0), dpi=120, layout='constrained')
  axes = figure.add_subplot()
  values_seen = []
  for method in dict.fromkeys(r['method'] for r in rows):
    mine = [r for r in rows if r['method'] == method and field in r['hparams']
            and not r['diverged']]
    if not mine:
      continue
    xs = np.array([r['hparams'][field] for r in mine])
    ys = 100.0 * np.array([r['accuracy'] for r in mine])
    values_seen.extend(xs.tolist())
    (line,) = axes.plot([], [], marker='o', label=display_name(method))
    axes.scatter(xs, ys, color=line.get_color(), alpha=0.35, s=14)
    curve_x, curve_y = [], []
    for x in sorted(set(xs.tolist())):
      at_x = best_per_method([r for r in mine if r['hparams'][field] == x])
      curve_x.append(x)
      curve_y.append(100.0 * at_x[method]['accuracy_mean'])
    line.set_data(curve_x, curve_y)
  positive = [v for v in values_seen if v > 0]
  if positive and len(positive) == len(values_seen) and max(positive) >= 10 * min(positive):
    axes.set_xscale('log')
  axes.relim()
  axes.autoscale_view()
  axes.set_xlabel(field)
  axes.set_ylabel('Target accuracy (%)')
  axes.set_title(title)
  axes.grid(alpha=0.3)
  if axes.get_legend_handles_labels()[0]:
    axes.legend()
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png')
  return serialize.atomic_write_bytes(path, buffer.getvalue())


def write(workdir: str, rows: Sequence[dict], fields: Sequence[str], *, title: str,
          extra: dict | None = None) -> str:
  """Writes ``sweep.json``, ``sweep.md`` and the plots; returns the markdown."""
  best = best_per_method(rows)
  payload = dict(extra or {}, fields=list(fields), best=best, rows=list(rows))
  serialize.atomic_write_text(
      os.path.join(workdir, 'sweep.json'),
      json.dumps(report.to_jsonable(payload), indent=2, allow_nan=False) + '\n')
  text = markdown(rows, best, fields, title)
  serialize.atomic_write_text(os.path.join(workdir, 'sweep.md'), text)
  for field in fields:
    if field != 'seed':
      plot_field(os.path.join(workdir, f"sweep_{field.replace('.', '_')}.png"), rows,
                 field, title)
  return text


def finite_or_none(value):
  value = float(value)
  return value if math.isfinite(value) else None
