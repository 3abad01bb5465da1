"""Results rows: one per method, summarised over repeats (MetaGater paper, Tables 1-2).

Each repeat of a method yields a dict of target-task metrics after fast
adaptation (docs/design.md s.4): the mean query accuracy over targets, per-target
accuracy and channel sparsity, the MACs ratio against the dense network, and
wall times. `summarize` turns the repeats into one row; `write_results` writes
``results.json`` and ``results.md``.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Sequence

import numpy as np

from mg.report.serialize import atomic_write_text, is_finite_number, to_jsonable
from mg.report.tables import results_markdown

# Every row has these keys, in this order (None where a key does not apply).
ROW_KEYS = (
    'method', 'accuracy_mean', 'accuracy_std', 'accuracy_std_over',
    'accuracy_std_repeats', 'accuracy_std_targets',
    'sparsity_mean', 'sparsity_std', 'sparsity_std_repeats',
    'weight_sparsity_mean', 'weight_sparsity_std', 'macs_ratio', 'train_time_s',
    'adapt_time_s', 'rounds', 'local_steps', 'repeats', 'diverged',
    'diverged_round', 'diverged_stage', 'not_run', 'target_accuracy', 'target_sparsity',
    'repeat_accuracy', 'seconds_per_round', 'images_per_second', 'compile_s')

# Keys set to None when a repeat diverged: numbers a fault may have corrupted.
METRIC_KEYS = (
    'accuracy_mean', 'accuracy_std', 'accuracy_std_over', 'accuracy_std_repeats',
    'accuracy_std_targets', 'sparsity_mean', 'sparsity_std', 'sparsity_std_repeats',
    'weight_sparsity_mean', 'weight_sparsity_std', 'macs_ratio', 'train_time_s',
    'adapt_time_s', 'target_accuracy', 'target_sparsity', 'repeat_accuracy',
    'seconds_per_round', 'images_per_second', 'compile_s')


def mean_curve(curves: Sequence[dict], value: str = 'accuracy_mean',
               spread: str | None = 'accuracy_std') -> dict:
  """Repeats' curves averaged over the rounds they share: one curve helper for both systems.

  Args:
    curves: one ``{'round': [...], value: [...], (spread: [...])}`` per repeat.
      The first repeat's rounds are the curve's; repeats with other rounds (one
      that diverged early) are left out.
    value: the key of the values to average.
    spread: the key of a repeat's own spread (MetaGater's std across targets),
      used when only one repeat shares the rounds; None: no band then.

  Returns:
    ``{'round', 'accuracy_mean', 'accuracy_std'}``: the mean and the std across
    repeats (with one repeat: its own ``spread``, or None).
  """
  rounds = list(curves[0]['round'])
  shared = [c for c in curves if list(c['round']) == rounds]
  values = np.array([c[value] for c in shared], np.float64)
  if len(shared) > 1:
    std = values.std(0).tolist()
  else:
    own = shared[0].get(spread) if spread else None
    std = None if own is None else np.asarray(own, np.float64).tolist()
  return {'round': rounds, 'accuracy_mean': values.mean(0).tolist(), 'accuracy_std': std}


def _mean(values: Sequence[Any]) -> float | None:
  """Mean of the non-None values, None when there are none."""
  present = [float(value) for value in values if value is not None]
  return float(np.mean(present)) if present else None


def _std(values: Sequence[float] | None) -> float | None:
  """Population standard deviation (ddof=0), None for an empty sample."""
  return float(np.std(np.asarray(values, np.float64))) if values else None


def _pooled(lists: Sequence[Any]) -> list[float] | None:
  """Concatenation of the non-None per-repeat lists, None when all are None."""
  present = [lst for lst in lists if lst is not None]
  if not present:
    return None
  return [float(value) for lst in present for value in np.ravel(np.asarray(lst, np.float64))]


def _within(lists: Sequence[Any]) -> float | None:
  """Mean over repeats of the std across one repeat's values (e.g. its targets)."""
  stds = [_std(list(np.ravel(lst))) for lst in lists if lst is not None and len(lst)]
  return float(np.mean(stds)) if stds else None


def _setting(repeats: Sequence[dict], key: str) -> Any:
  """A per-run setting: its value if all repeats agree, else the distinct values."""
  values = []
  for repeat in repeats:
    value = to_jsonable(repeat.get(key))
    if value not in values:
      values.append(value)
  return values[0] if len(values) == 1 else values


def _faulted(repeat: dict) -> bool:
  """A repeat flagged as diverged, or one whose accuracy is not a finite number."""
  if repeat.get('diverged', False):
    return True
  accuracy = repeat.get('accuracy')
  if accuracy is None:
    raise ValueError(
        "a repeat has no 'accuracy' and is not marked 'diverged': pass the mean "
        "target accuracy, or diverged=True if training failed")
  return not is_finite_number(accuracy)


def summarize(method: str, repeats: Sequence[dict]) -> dict:
  """One results row (MetaGater paper, Tables 1-2) from per-repeat metrics.

  Args:
    method: the method's name, e.g. ``'metagater'``.
    repeats: one dict per repeat with keys ``accuracy`` (mean target accuracy,
      a fraction), ``target_accuracy`` (list per target), ``sparsity`` (mean
      channel sparsity over targets, or None), ``target_sparsity`` (list or
      None), optionally ``sparsity_kind`` (``'channel'``, the default, or
      ``'weight'``), ``macs_ratio`` (or None), ``train_time_s``,
      ``adapt_time_s``, ``rounds``, ``local_steps``, ``diverged`` and
      optionally ``diverged_round`` and ``diverged_stage`` (``'training'``,
      ``'adaptation'`` or ``'evaluation'``), or ``not_run`` (why the method was
      not run: its metrics are None and it is not a divergence). Each repeat
      has its own partition, so its targets are other tasks.

  Returns:
    A dict with every key of `ROW_KEYS`:
      ``accuracy_mean``: mean over repeats of the repeat's mean target accuracy.
      ``accuracy_std``: its std across repeats (``accuracy_std_over ==
        'repeats'``); with a single repeat, the std across targets
        (``'targets'``). Stds are population stds (ddof=0).
      ``accuracy_std_repeats``: the std across repeats of the repeat means
        (None for one repeat); ``accuracy_std_targets``: the std across one
        repeat's targets, averaged over repeats.
      ``repeat_accuracy``: each repeat's mean target accuracy.
      ``sparsity_mean``: mean over repeats of the *channel* sparsity (gated
        channels off, or filters pruned); ``sparsity_std``: its std across
        one repeat's targets, averaged over repeats (the paper's "sparsity
        diversity"); ``sparsity_std_repeats``: std of the repeat means.
      ``weight_sparsity_mean``, ``weight_sparsity_std``: the same for
        unstructured weight sparsity (MetaSNIP), kept apart from channel
        sparsity (the ``sparsity_*`` keys are then None).
      ``macs_ratio``, ``train_time_s``, ``adapt_time_s``, and the optional
        ``seconds_per_round``, ``images_per_second``, ``compile_s``: means over
        the repeats that report them (None where none does).
      ``rounds``, ``local_steps``: the settings (a list if repeats disagree).
      ``repeats``: the count; ``diverged``: any repeat diverged (or produced a
        non-finite accuracy), ``diverged_round``: the earliest reported round,
        ``diverged_stage``: the stage of that round; ``not_run``: the reason
        when a repeat was not run (not a divergence).
      ``target_accuracy``, ``target_sparsity``: per-target lists pooled over
        repeats (``target_sparsity`` None when the method has no gates).
    When a repeat diverged or was not run, every key of `METRIC_KEYS` is None.

  Raises:
    ValueError: for no repeats, or a repeat with neither accuracy nor a
      divergence flag.
  """
  if not repeats:
    raise ValueError(f'summarize({method!r}) needs at least one repeat')
  row = dict.fromkeys(ROW_KEYS)
  row.update(method=str(method), rounds=_setting(repeats, 'rounds'),
             local_steps=_setting(repeats, 'local_steps'), repeats=len(repeats),
             diverged=False)
  not_run = [repeat['not_run'] for repeat in repeats if repeat.get('not_run')]
  if not_run:
    row.update(not_run=str(not_run[0]))
    return row
  faults = [_faulted(repeat) for repeat in repeats]
  fault_rounds = sorted([(repeat['diverged_round'], repeat.get('diverged_stage'))
                         for repeat, fault in zip(repeats, faults)
                         if fault and repeat.get('diverged_round') is not None],
                        key=lambda round_stage: round_stage[0])
  row.update(
      diverged=any(faults),
      diverged_round=int(fault_rounds[0][0]) if fault_rounds else None,
      diverged_stage=fault_rounds[0][1] if fault_rounds else None)
  if row['diverged']:
    return row

  accuracies = [float(repeat['accuracy']) for repeat in repeats]
  target_accuracy = _pooled([repeat.get('target_accuracy') for repeat in repeats])
  target_sparsity = _pooled([repeat.get('target_sparsity') for repeat in repeats])
  if len(repeats) > 1:
    accuracy_std, std_over = _std(accuracies), 'repeats'
  elif target_accuracy:
    accuracy_std, std_over = _std(target_accuracy), 'targets'
  else:
    accuracy_std, std_over = None, None
  sparsities = [repeat.get('sparsity') for repeat in repeats]
  sparsity_mean = _mean(sparsities)
  sparsity_std = _within([repeat.get('target_sparsity') for repeat in repeats])
  kinds = {repeat.get('sparsity_kind') or 'channel' for repeat in repeats}
  weight = kinds == {'weight'}
  row.update(
      accuracy_mean=_mean(accuracies),
      accuracy_std=accuracy_std,
      accuracy_std_over=std_over,
      accuracy_std_repeats=_std(accuracies) if len(repeats) > 1 else None,
      accuracy_std_targets=_within([repeat.get('target_accuracy') for repeat in repeats]),
      repeat_accuracy=accuracies,
      sparsity_mean=None if weight else sparsity_mean,
      sparsity_std=None if weight else sparsity_std,
      sparsity_std_repeats=(_std([x for x in sparsities if x is not None])
                            if len(repeats) > 1 and sparsity_mean is not None and not weight
                            else None),
      weight_sparsity_mean=sparsity_mean if weight else None,
      weight_sparsity_std=sparsity_std if weight else None,
      macs_ratio=_mean([repeat.get('macs_ratio') for repeat in repeats]),
      train_time_s=_mean([repeat.get('train_time_s') for repeat in repeats]),
      adapt_time_s=_mean([repeat.get('adapt_time_s') for repeat in repeats]),
      **{key: _mean([repeat.get(key) for repeat in repeats])
         for key in ('seconds_per_round', 'images_per_second', 'compile_s')},
      target_accuracy=target_accuracy,
      target_sparsity=target_sparsity)
  return to_jsonable(row)


def complete_row(row: dict) -> dict:
  """`row` with every key of `ROW_KEYS` first (missing ones None), extras after."""
  if 'method' not in row:
    raise ValueError(f"a results row needs a 'method'; got keys {sorted(row)}")
  completed = {key: row.get(key) for key in ROW_KEYS}
  completed.update((key, value) for key, value in row.items() if key not in completed)
  return completed


def write_results(
    workdir: str | os.PathLike,
    rows: Sequence[dict],
    partition: dict | None,
    extra: dict | None = None,
) -> str:
  """Writes ``results.json`` and ``results.md`` to `workdir`, each atomically.

  ``results.json`` is ``{"rows": rows, "partition": partition, **extra}``
  (indent 2, non-finite floats as null); ``results.md`` holds the partition
  summary and the two tables of the MetaGater paper (Table 1: accuracy and
  training time; Table 2: accuracy, sparsity, MACs and adaptation time).

  Args:
    workdir: output folder (created if missing).
    rows: results rows, typically from `summarize`; missing keys are filled
      with None.
    partition: the federated partition's statistics (``num_tasks``,
      ``num_train_tasks``, ``num_targets``, ``samples_per_task``), or None.
    extra: more top-level json entries (e.g. config, dataset); must not use
      the keys ``rows`` or ``partition``.

  Returns:
    The markdown text written to ``results.md``.
  """
  extra = dict(extra or {})
  clashes = sorted({'rows', 'partition'} & set(extra))
  if clashes:
    raise ValueError(f'extra must not redefine {clashes}: they are written from the arguments')
  rows = [complete_row(to_jsonable(dict(row))) for row in rows]
  partition = to_jsonable(partition)
  payload = to_jsonable({'rows': rows, 'partition': partition, **extra})
  workdir = pathlib.Path(workdir)
  atomic_write_text(workdir / 'results.json', json.dumps(payload, indent=2, allow_nan=False) + '\n')
  markdown = results_markdown(rows, partition, to_jsonable(extra))
  atomic_write_text(workdir / 'results.md', markdown)
  return markdown
