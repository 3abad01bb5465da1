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
from mg.metagater import methods  # noqa: F401  (registers the display names)
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


def _value(value) -> str:
  return f'{value:g}' if isinstance(value, float) else str(value)


def _own_settings(b) -> str:
  if b.get('hparams') is None:
    return 'every configuration diverged'
  return ', '.join(f'{k.rsplit(".", 1)[-1]}={_value(v)}'
                   for k, v in b['hparams'].items() if k.startswith('per_method.'))


# sweep.md's tables (``mg.report.tables`` columns): a diverged row reads 'diverged'
# in its metric cells; a member gives its round and stage as well.
_BEST = (
    ('Method', lambda b, m: display_name(b['method']), False),
    ('Configurations', lambda b, m: str(b['tried']), False),
    ('Own settings', lambda b, m: _own_settings(b), False),
    ('Seeds', lambda b, m: str(len(b['seeds'])), True),
    ('Validation accuracy (%)', lambda b, m: report.percent_pm(
        b['validation_accuracy_mean'], b['validation_accuracy_std']), True),
    ('Target accuracy (%)', lambda b, m: report.percent_pm(b['accuracy_mean'],
                                                           b['accuracy_std']), True),
    ('Sparsity, validation (%)', lambda b, m: report.percent(b['validation_sparsity_mean']),
     True),
)


def _diverged_at(r) -> str:
  stage = f", {r['diverged_stage']}" if r.get('diverged_stage') else ''
  return f"diverged (round {r['diverged_round']}{stage})"


def _member_columns(hp_fields: Sequence[str]) -> tuple:
  return (
      (('Method', lambda r, m: display_name(r['method']), False),)
      + tuple((f, lambda r, m, f=f: _value(r['hparams'].get(f, '—')), False)
              for f in hp_fields)
      + (('seed', lambda r, m: str(r['seed']), False),
         ('Validation accuracy (%)', lambda r, m: _diverged_at(r) if r['diverged']
          else report.percent(r['validation_accuracy_mean']), False),
         ('Target accuracy (%)', lambda r, m: report.percent(r['accuracy']), True),
         ('Sparsity (%)', lambda r, m: report.percent(r['sparsity']), True)))


def markdown(rows: Sequence[dict], best: dict, fields: Sequence[str], title: str,
             matched: dict | None = None) -> str:
  """``sweep.md``: best configurations, then every row sorted by validation accuracy."""
  tried = {}
  for r in rows:
    tried.setdefault(r['method'], set()).add(configuration(r))
  chosen = [dict(b, tried=len(tried[m])) for m, b in best.items()]
  chosen += [dict(method=m, tried=len(tried[m]), diverged=True)
             for m in sorted(set(tried) - set(best))]
  lines = [f'# {title}', '', '## Best configuration per method (chosen on validation)', '',
           report.markdown_table(chosen, _BEST)]
  if matched:
    status = ('within' if matched['within_tolerance'] else 'none within; nearest to')
    lines += ['', '## MetaGater (alpha_t = 1) at matched sparsity', '',
              f"MetaGater's best configuration has {report.percent(matched['reference_sparsity'])}% "
              f"channel sparsity on the validation tasks; of the alpha_t = 1 configurations "
              f"{status} ±{100 * matched['tolerance']:.0f} points of it, the best on "
              f"validation: {_own_settings(matched)}: validation accuracy "
              f"{100 * matched['validation_accuracy_mean']:.2f}%, target accuracy "
              f"{100 * matched['accuracy_mean']:.2f}%, sparsity "
              f"{report.percent(matched['validation_sparsity_mean'])}%."]
  ordered = sorted(rows, key=lambda r: (r['method'], r['diverged'],
                                        -(r['validation_accuracy_mean'] or 0.0)))
  lines += ['', '## Every member', '',
            report.markdown_table(ordered, _member_columns([f for f in fields if f != 'seed'])),
            '', 'Validation / target accuracy: mean query accuracy over the validation / '
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
