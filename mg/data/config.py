"""Checks of the ``config.data`` fields, before anything is read.

Each failure raises :class:`DataError` naming the field, what is wrong with it
and the values it accepts, so a misspelt ``--config.data.x=...`` or a bad value
stops the run with one clear line.
"""

from __future__ import annotations

import difflib
import numbers
from typing import Any

from mg.data.errors import DataError
from mg.data.specs import SPECS

SOURCES = ('auto', 'digits', 'tfds', 'raw')
SPLITS = ('train', 'test', 'all')
FIELDS = ('source', 'name', 'dir', 'split', 'num_tasks', 'num_targets',
          'num_validation', 'classes_per_task', 'min_samples', 'max_samples',
          'query_fraction')


def _hint(word: str, choices) -> str:
  close = difflib.get_close_matches(str(word), list(choices), n=1)
  return f" (did you mean '{close[0]}'?)" if close else ''


def _choice(value: Any, field: str, choices) -> None:
  if value not in choices:
    raise DataError(
        f'config.data.{field}={value!r} is not valid{_hint(value, choices)}; '
        f'choose one of: {", ".join(choices)}.')


def is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def num_validation(cfg) -> int:
  """``config.data.num_validation`` resolved: ``None`` means the default.

  The default is as many validation tasks as target tasks when that leaves at
  least as many meta-training tasks, else 3: enough tasks to choose
  hyperparameters on without ever looking at the targets.
  """
  value = cfg['num_validation']
  if value is not None:
    return value
  num_tasks, num_targets = cfg['num_tasks'], cfg['num_targets']
  if is_int(num_tasks) and is_int(num_targets) and num_tasks - 2 * num_targets >= num_targets:
    return num_targets
  return 3


def check_partition_args(*, num_classes: int, num_tasks, classes_per_task,
                         min_samples, max_samples, query_fraction,
                         num_targets, num_validation=0) -> None:
  """The numeric constraints of a federated partition (docs/design.md s.2, s.6)."""
  for field, value in (('num_tasks', num_tasks),
                       ('classes_per_task', classes_per_task),
                       ('min_samples', min_samples),
                       ('max_samples', max_samples),
                       ('num_targets', num_targets)):
    if not is_int(value) or value < 1:
      raise DataError(f'config.data.{field}={value!r} must be a positive '
                      'integer.')
  if not is_int(num_validation) or num_validation < 0:
    raise DataError(f'config.data.num_validation={num_validation!r} must be an '
                    'integer >= 0 (or None for the default).')
  if num_targets + num_validation >= num_tasks:
    raise DataError(
        f'config.data.num_targets={num_targets} must be smaller than '
        f'config.data.num_tasks={num_tasks} minus '
        f'config.data.num_validation={num_validation}: some tasks must remain '
        'for meta-training.')
  if classes_per_task > num_classes:
    raise DataError(
        f'config.data.classes_per_task={classes_per_task} exceeds the '
        f'{num_classes} classes of the dataset; use at most {num_classes}.')
  if min_samples > max_samples:
    raise DataError(
        f'config.data.min_samples={min_samples} exceeds '
        f'config.data.max_samples={max_samples}; the task sizes are drawn from '
        '[min_samples, max_samples].')
  if min_samples < max(2, classes_per_task):
    raise DataError(
        f'config.data.min_samples={min_samples} is too small: every task '
        f'needs at least max(2, classes_per_task={classes_per_task}) samples '
        '(one support and one query sample, one sample per class).')
  if (not isinstance(query_fraction, numbers.Real)
      or isinstance(query_fraction, bool) or not 0 < query_fraction < 1):
    raise DataError(
        f'config.data.query_fraction={query_fraction!r} must be a number '
        'strictly between 0 and 1 (the share of each task held out as query).')


def validate_source(cfg) -> None:
  """Checks which images ``cfg`` names (``source``, ``name``, ``split``, ``dir``).

  Both systems' data sections have these four fields; ``DataError`` names the
  first bad one.
  """
  _choice(cfg['source'], 'source', SOURCES)
  _choice(cfg['name'], 'name', tuple(SPECS))
  _choice(cfg['split'], 'split', SPLITS)
  if cfg['dir'] is not None and (not isinstance(cfg['dir'], str)
                                 or not cfg['dir']):
    raise DataError(f"config.data.dir={cfg['dir']!r} must be a folder path "
                    'or None.')
  is_digits = cfg['name'] == 'digits'
  if is_digits and cfg['source'] not in ('auto', 'digits'):
    raise DataError(
        f"config.data.source={cfg['source']!r} cannot serve name='digits': "
        "the digits come with scikit-learn; use source='digits' or 'auto'.")
  if cfg['source'] == 'digits' and not is_digits:
    raise DataError(
        f"config.data.source='digits' serves only name='digits', not "
        f"{cfg['name']!r}; use source='tfds', 'raw' or 'auto'.")
  if is_digits and cfg['split'] != 'all':
    raise DataError(
        f"config.data.split={cfg['split']!r}: the scikit-learn digits have no "
        "train/test split; use split='all'.")
  if cfg['source'] == 'raw' and cfg['dir'] is None:
    raise DataError(
        "config.data.source='raw' needs config.data.dir, the folder holding "
        f"the official {cfg['name']} files.")


def validate(cfg) -> None:
  """Checks every ``config.data`` field; raises ``DataError`` at the first bad.

  Args:
    cfg: the ``config.data`` ConfigDict (or any mapping with the same keys).
  """
  keys = set(cfg.keys())
  unknown = sorted(keys - set(FIELDS))
  if unknown:
    raise DataError(
        f'config.data has no field {unknown[0]!r}{_hint(unknown[0], FIELDS)}; '
        f'its fields are: {", ".join(FIELDS)}.')
  for key in FIELDS:
    if key not in keys:
      raise DataError(f'config.data lacks the field {key!r}; its fields are: '
                      f'{", ".join(FIELDS)}.')
  validate_source(cfg)
  check_partition_args(
      num_classes=SPECS[cfg['name']].num_classes,
      num_tasks=cfg['num_tasks'], classes_per_task=cfg['classes_per_task'],
      min_samples=cfg['min_samples'], max_samples=cfg['max_samples'],
      query_fraction=cfg['query_fraction'], num_targets=cfg['num_targets'],
      num_validation=num_validation(cfg))
