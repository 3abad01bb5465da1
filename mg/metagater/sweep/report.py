"""MetaGater's sweep report: one row per member, the best configuration per method,
and validation accuracy against each swept hyperparameter.

Files written to the workdir:

* ``sweep.json``: ``rows`` (method, hyperparameters, seed, the final mean
  accuracy on the validation tasks ``validation_accuracy_mean`` and on the
  target tasks ``accuracy``, per-task accuracies, sparsity, training curve,
  losses, diverged / diverged_round / diverged_stage), ``best`` per method,
  ``matched`` (MetaGater with alpha_t = 1 at MetaGater's sparsity), the swept
  fields, timings;
* ``sweep.md``: the best configurations and every row, best first;
* ``sweep_<field>.png`` for each swept hyperparameter: validation accuracy (%)
  of every member (dots) and of the best setting of the other fields at each
  value (line, mean over seeds);
* ``sweep_losses.png``: training loss per round of the best MetaGater, the best
  MetaGater with alpha_t = 1 and the latter at matched sparsity.

A configuration is its method and hyperparameters; its score is the mean over
its seeds of the final mean accuracy on the *validation* tasks (never the
targets, whose accuracy is reported beside it and is the result a run
reports), and a configuration with any diverged seed is never the best.
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
from mg.sweep.results import best_per_method, configuration, summaries


# Sparsities (fractions) within this of each other count as matched.
MATCH_TOLERANCE = 0.05


def matched_sparsity(rows: Sequence[dict], best: dict, reference: str = 'metagater',
                     other: str = 'metagater_unaccelerated') -> dict | None:
  """``other``'s best configuration at ``reference``'s final sparsity.

  Among ``other``'s configurations whose mean validation sparsity lies within
  ``MATCH_TOLERANCE`` of the best ``reference`` configuration's, the one with
  the best validation accuracy; if none lies within, the nearest. Sparsity is
  measured on the validation tasks, so the match never looks at the targets.
  None when either method has no finished configuration.
  """
  if reference not in best or best[reference]['validation_sparsity_mean'] is None:
    return None
  target = best[reference]['validation_sparsity_mean']
  candidates = [s for s in summaries(rows) if s['method'] == other
                and s['validation_sparsity_mean'] is not None]
  if not candidates:
    return None
  gap = lambda s: abs(s['validation_sparsity_mean'] - target)
  within = [s for s in candidates if gap(s) <= MATCH_TOLERANCE]
  chosen = (max(within, key=lambda s: s['validation_accuracy_mean']) if within
            else min(candidates, key=gap))
  return dict(chosen, reference=reference, reference_sparsity=target,
              tolerance=MATCH_TOLERANCE, within_tolerance=bool(within))


def _percent(value) -> str:
  return '—' if value is None else f'{100.0 * value:.2f}'


def _value(value) -> str:
  return f'{value:g}' if isinstance(value, float) else str(value)


def markdown(rows: Sequence[dict], best: dict, fields: Sequence[str], title: str,
             matched: dict | None = None) -> str:
  """``sweep.md``: best configurations, then every row sorted by validation accuracy."""
  hp_fields = [f for f in fields if f != 'seed']
  counts = {}
  for summary in summaries(rows) + [dict(method=r['method']) for r in rows if r['diverged']]:
    counts.setdefault(summary['method'], set())
  for r in rows:
    counts[r['method']].add(configuration(r))
  lines = [f'# {title}', '', '## Best configuration per method (chosen on validation)', '',
           '| Method | Configurations | Own settings | Seeds | Validation accuracy (%) | '
           'Target accuracy (%) | Sparsity, validation (%) |',
           '|---|---:|---|---:|---:|---:|---:|']
  for method, b in best.items():
    settings = ', '.join(f'{k.rsplit(".", 1)[-1]}={_value(v)}'
                         for k, v in b['hparams'].items() if k.startswith('per_method.'))
    lines.append(f"| {display_name(method)} | {len(counts[method])} | {settings} | "
                 f"{len(b['seeds'])} | "
                 f"{100 * b['validation_accuracy_mean']:.2f} ± "
                 f"{100 * b['validation_accuracy_std']:.2f} | "
                 f"{100 * b['accuracy_mean']:.2f} ± {100 * b['accuracy_std']:.2f} | "
                 f"{_percent(b['validation_sparsity_mean'])} |")
  missing = sorted({r['method'] for r in rows} - set(best))
  for method in missing:
    lines.append(f'| {display_name(method)} | {len(counts[method])} | every configuration '
                 'diverged | | | | |')
  if matched:
    settings = ', '.join(f'{k.rsplit(".", 1)[-1]}={_value(v)}'
                         for k, v in matched['hparams'].items() if k.startswith('per_method.'))
    status = ('within' if matched['within_tolerance'] else 'none within; nearest to')
    lines += ['', '## MetaGater (alpha_t = 1) at matched sparsity', '',
              f"MetaGater's best configuration has {_percent(matched['reference_sparsity'])}% "
              f"channel sparsity on the validation tasks; of the alpha_t = 1 configurations "
              f"{status} ±{100 * matched['tolerance']:.0f} points of it, the best on "
              f"validation: {settings}: validation accuracy "
              f"{100 * matched['validation_accuracy_mean']:.2f}%, target accuracy "
              f"{100 * matched['accuracy_mean']:.2f}%, sparsity "
              f"{_percent(matched['validation_sparsity_mean'])}%."]
  lines += ['', '## Every member', '',
            '| Method | ' + ' | '.join(hp_fields) + ' | seed | Validation accuracy (%) | '
            'Target accuracy (%) | Sparsity (%) |',
            '|---|' + '---:|' * (len(hp_fields) + 4)]
  ordered = sorted(rows, key=lambda r: (r['method'], r['diverged'],
                                        -(r['validation_accuracy_mean'] or 0.0)))
  for r in ordered:
    values = [_value(r['hparams'].get(f, '—')) for f in hp_fields]
    if r['diverged']:
      stage = f", {r['diverged_stage']}" if r.get('diverged_stage') else ''
      scores = [f"diverged (round {r['diverged_round']}{stage})", '—', '—']
    else:
      scores = [_percent(r['validation_accuracy_mean']), _percent(r['accuracy']),
                _percent(r['sparsity'])]
    lines.append('| ' + ' | '.join([display_name(r['method']), *values, str(r['seed']),
                                    *scores]) + ' |')
  lines += ['', 'Validation / target accuracy: mean query accuracy over the validation / '
            'target tasks after fast adaptation, at the last round (best: mean ± std over '
            'seeds). Configurations are chosen on validation accuracy only; target accuracy '
            'is shown, never used to choose. Configurations: how many each method tried.']
  return '\n'.join(lines) + '\n'


def plot_field(path, rows: Sequence[dict], field: str, title: str):
  """Validation accuracy (%) against ``field``: members as dots, best per value as a line."""
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
    ys = 100.0 * np.array([r['validation_accuracy_mean'] for r in mine])
    values_seen.extend(xs.tolist())
    (line,) = axes.plot([], [], marker='o', label=display_name(method))
    axes.scatter(xs, ys, color=line.get_color(), alpha=0.35, s=14)
    curve_x, curve_y = [], []
    for x in sorted(set(xs.tolist())):
      at_x = best_per_method([r for r in mine if r['hparams'][field] == x])
      curve_x.append(x)
      curve_y.append(100.0 * at_x[method]['validation_accuracy_mean'])
    line.set_data(curve_x, curve_y)
  positive = [v for v in values_seen if v > 0]
  if positive and len(positive) == len(values_seen) and max(positive) >= 10 * min(positive):
    axes.set_xscale('log')
  axes.relim()
  axes.autoscale_view()
  axes.set_xlabel(field)
  axes.set_ylabel('Validation accuracy (%)')
  axes.set_title(title)
  axes.grid(alpha=0.3)
  if axes.get_legend_handles_labels()[0]:
    axes.legend()
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png')
  return serialize.atomic_write_bytes(path, buffer.getvalue())


def plot_losses(path, best: dict, matched: dict | None, title: str):
  """Training loss per round of the best MetaGater and alpha_t = 1 configurations."""
  curves = {}
  for method in ('metagater', 'metagater_unaccelerated'):
    if method in best and best[method].get('losses'):
      curves[f'{display_name(method)}, best'] = best[method]['losses']
  if matched and matched.get('losses'):
    curves[f"{display_name('metagater_unaccelerated')}, matched sparsity"] = matched['losses']
  if not curves:
    return None
  return report.plot_losses(path, curves, title=title)


def write(workdir: str, rows: Sequence[dict], fields: Sequence[str], *, title: str,
          extra: dict | None = None) -> str:
  """Writes ``sweep.json``, ``sweep.md`` and the plots; returns the markdown."""
  best = best_per_method(rows)
  matched = matched_sparsity(rows, best)
  payload = dict(extra or {}, fields=list(fields), best=best, matched=matched,
                 rows=list(rows))
  serialize.atomic_write_text(
      os.path.join(workdir, 'sweep.json'),
      json.dumps(report.to_jsonable(payload), indent=2, allow_nan=False) + '\n')
  plot_losses(os.path.join(workdir, 'sweep_losses.png'), best, matched,
              f'{title}: training loss per round')
  text = markdown(rows, best, fields, title, matched)
  serialize.atomic_write_text(os.path.join(workdir, 'sweep.md'), text)
  for field in fields:
    if field != 'seed':
      plot_field(os.path.join(workdir, f"sweep_{field.replace('.', '_')}.png"), rows,
                 field, title)
  return text


def finite_or_none(value):
  value = float(value)
  return value if math.isfinite(value) else None
