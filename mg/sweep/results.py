"""Ranking a sweep's members: the best configuration per method, on validation.

A configuration is its method and hyperparameters; its score is the mean over
its seeds of the final mean accuracy on the *validation* tasks or clients
(never the targets or the test split, whose accuracy is carried beside it and
is the result a run reports), and a configuration with any diverged seed is
never the best. Each system writes its own sweep report from these
(``mg.metagater.sweep.report``, ``mg.reefl.sweep``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np



def configuration(row: dict) -> tuple:
  """The hashable identity of a row's configuration (method and hyperparameters)."""
  return (row['method'],) + tuple(sorted(row['hparams'].items()))


def summaries(rows: Sequence[dict]) -> list:
  """One summary per configuration without a diverged seed, means over its seeds."""
  groups = {}
  for row in rows:
    groups.setdefault(configuration(row), []).append(row)
  out = []
  for (method, *_), group in groups.items():
    if any(r['diverged'] for r in group):
      continue

    def mean(key, group=group):
      values = [r[key] for r in group if r.get(key) is not None]
      return float(np.mean(values)) if values else None

    validation = [r['validation_accuracy_mean'] for r in group]
    accuracy = [r['accuracy'] for r in group]
    losses = [r['losses'] for r in group if r.get('losses')]
    out.append(dict(
        method=method, hparams=group[0]['hparams'], seeds=[r['seed'] for r in group],
        validation_accuracy_mean=float(np.mean(validation)),
        validation_accuracy_std=float(np.std(validation)),
        validation_sparsity_mean=mean('validation_sparsity_mean'),
        accuracy_mean=float(np.mean(accuracy)), accuracy_std=float(np.std(accuracy)),
        sparsity_mean=mean('sparsity'),
        losses=(np.nanmean(np.array(losses, dtype=float), axis=0).tolist()
                if losses else None)))
  return out


def best_per_method(rows: Sequence[dict]) -> dict:
  """``{method: summary}`` of the configuration with the best mean *validation*
  accuracy over seeds (target accuracy is carried along, never compared)."""
  best = {}
  for summary in summaries(rows):
    method = summary['method']
    if (method not in best or summary['validation_accuracy_mean']
        > best[method]['validation_accuracy_mean']):
      best[method] = summary
  return best
