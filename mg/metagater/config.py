"""Checking an experiment config before any work starts.

Every message names the field, what is wrong and what to do, so a bad
``--config.field=value`` stops at once with one line instead of a traceback
minutes later. Data fields are checked by ``mg.data.validate``;
``validate_dataset`` checks what needs the loaded dataset (its classes and
sizes) before the partition is drawn and any training starts.
"""

from __future__ import annotations

import numpy as np

from mg import data as data_lib
from mg.errors import ConfigError
from mg.harness import fields
from mg.metagater import methods as methods_lib
from mg import models
from mg.data.specs import SPECS
from mg.federated import mapping
from mg.metagater.algorithms.metagater import ETA_SCHEDULES


_check, _get, _is_number = fields.check, fields.get, fields.is_number


def _positive_int(config, field: str, allow_zero: bool = False):
  fields.integer(config, field, low=0 if allow_zero else 1)


_positive = fields.positive


def validate(config) -> None:
  """Raises ``ConfigError`` (or ``mg.data.DataError``) for a config that cannot run."""
  methods = tuple(config.methods)
  _check(len(methods) > 0, 'methods is empty: name at least one of '
         f'{methods_lib.METHODS}')
  for m in methods:
    _check(m in methods_lib.METHODS,
           f'methods: unknown method {m!r}; expected some of {methods_lib.METHODS}')
  for snip in sorted(set(methods_lib.BACKBONE_OF) & set(methods)):
    _check({'metagater', 'metagater_nogate'} <= set(methods),
           f"methods: {snip} prunes MetaGater w/o gating's backbone at MetaGater's "
           "sparsity, so it needs 'metagater_nogate' and 'metagater' in methods too")
  _check(len(set(methods)) == len(methods), f'methods={methods}: a method is repeated')
  _check(config.model.name in models.NAMES,
         f'model.name={config.model.name!r}: expected one of {models.NAMES}')
  _check(config.meta.local_steps != 0,
         'meta.local_steps=0: every method trains with K local steps per round, and '
         'K = 0 leaves the meta-model where it started (it would report the initial '
         'model); use an integer >= 1')
  fields.validate_run(config)
  for field in ('meta.rounds', 'meta.tasks_per_round', 'meta.local_steps',
                'model.gate_hidden'):
    _positive_int(config, field)
  for field in ('meta.batch_size', 'adapt.batch_size', 'debug_nan_round'):
    _positive_int(config, field, allow_zero=True)
  fields.boolean(config, 'meta.compare_unaccelerated')
  fields.boolean(config, 'adapt.gate_step')
  trained = methods + (('metagater_unaccelerated',) if config.meta.compare_unaccelerated
                       else ())
  _check(config.debug_nan_method == '' or config.debug_nan_method in trained,
         f'debug_nan_method={config.debug_nan_method!r}: expected one of the methods '
         f"run, {trained}, or '' for every method")
  for field in ('meta.local_lr', 'meta.lam', 'meta.beta', 'adapt.lr', 'model.tau',
                'perfedavg.alpha', 'perfedavg.beta'):
    _positive(config, field)
  if 'alpha_hf' in config.perfedavg:
    _positive(config, 'perfedavg.alpha_hf')
  for method, values in config.get('per_method', {}).items():
    for name, value in values.items():
      field = f'per_method.{method}.{name}'
      if value is None:
        continue
      if name == 'rho':
        _check(_is_number(value) and value >= 0, f'{field}={value!r}: expected a number >= 0')
      else:
        _positive(config, field)
  rho, alpha, keep_frac = config.meta.rho, config.meta.alpha, config.adapt.keep_frac
  _check(_is_number(rho) and rho >= 0, f'meta.rho={rho!r}: expected a number >= 0')
  _check(alpha is None or (_is_number(alpha) and 0 < alpha <= 1),
         f'meta.alpha={alpha!r}: expected a number in (0, 1], or None for 2/(t+1)')
  _check(_is_number(keep_frac) and 0.0 <= keep_frac < 1.0,
         f'adapt.keep_frac={keep_frac!r}: expected a fraction in [0, 1)')
  _check(config.meta.regularizer in ('group_lasso', 'lasso', 'none'),
         f'meta.regularizer={config.meta.regularizer!r}: expected group_lasso, '
         'lasso or none')
  _check(config.meta.eta in ETA_SCHEDULES,
         f'meta.eta={config.meta.eta!r}: expected one of {ETA_SCHEDULES}')
  _check(config.meta.mapping in ('auto',) + mapping.STRATEGIES,
         f'meta.mapping={config.meta.mapping!r}: expected one of '
         f"{('auto',) + mapping.STRATEGIES}")
  data_lib.validate(config.data)
  num_validation = data_lib.num_validation(config.data)
  num_train = config.data.num_tasks - config.data.num_targets - num_validation
  _check(config.meta.tasks_per_round <= num_train,
         f'meta.tasks_per_round={config.meta.tasks_per_round} is more than the '
         f'{num_train} meta-training tasks (data.num_tasks - data.num_targets - '
         f'data.num_validation = {config.data.num_tasks} - {config.data.num_targets} - '
         f'{num_validation}); lower it or data.num_validation, or raise data.num_tasks')
  spec = SPECS[config.data.name]
  try:
    models.build(config.model.name, input_shape=spec.input_shape,
                 num_classes=spec.num_classes, gating=True,
                 gated_layers=tuple(config.model.gated_layers) or None,
                 gate_hidden=config.model.gate_hidden)
  except ValueError as e:
    raise ConfigError(f'model.gated_layers={tuple(config.model.gated_layers)}: {e}') from e


def validate_dataset(config, labels, num_classes: int, name: str = '') -> None:
  """Checks the partition fields against a loaded dataset, before any work.

  Necessary conditions of the partition drawn by ``mg.data.partition``
  (docs/design.md s.6): enough classes; ``num_tasks * min_samples`` samples in all;
  and, since that partition balances class usage (counts differ by at most
  one), every class serves at least ``floor(num_tasks * k / C)`` tasks, each
  asking at least ``floor(min_samples / k)`` samples of it, so the smallest
  class must hold their product. (The draw of the sizes in ``[min_samples,
  max_samples]`` is checked exactly when the partition is drawn.)

  Args:
    config: the experiment config.
    labels: (N,) integer labels of the loaded dataset.
    num_classes: its number of classes ``C``.
    name: the dataset's name, for messages.

  Raises:
    ConfigError: naming the field to change.
  """
  d = config.data
  labels = np.asarray(labels)
  about = f'the {labels.size} images of dataset {name or d.name} ({num_classes} classes)'
  _check(d.classes_per_task <= num_classes,
         f'data.classes_per_task={d.classes_per_task} is more than the {num_classes} '
         f'classes of dataset {name or d.name}; use at most {num_classes}')
  needed = d.num_tasks * d.min_samples
  _check(needed <= labels.size,
         f'data.num_tasks={d.num_tasks} x data.min_samples={d.min_samples} = {needed} '
         f'samples are more than {about}; lower data.num_tasks or data.min_samples')
  per_class = np.bincount(labels, minlength=num_classes)
  tasks_per_class = d.num_tasks * d.classes_per_task // num_classes
  share = d.min_samples // d.classes_per_task
  smallest = int(np.argmin(per_class))
  _check(tasks_per_class * share <= per_class[smallest],
         f'data.min_samples={d.min_samples}: every class serves at least '
         f'{tasks_per_class} of the data.num_tasks={d.num_tasks} tasks, each asking at '
         f'least {share} of its samples, but class {smallest} has only '
         f'{per_class[smallest]} samples in {about}; lower data.min_samples or '
         'data.num_tasks')


def validate_tasks(config, fed) -> None:
  """Checks the minibatch sizes against the drawn tasks, before any training.

  A minibatch is drawn with replacement, so a batch larger than a task only
  repeats its examples at a larger cost (``meta.batch_size=100000`` on tasks of
  28 examples runs for minutes); each must be at most the largest task's
  local data (meta-training: support and query; targets: the support split;
  0: all of it).

  Args:
    config: the experiment config.
    fed: the ``mg.data.FederatedData`` of the partition.

  Raises:
    ConfigError: naming the field and the sizes.
  """
  for field, tasks, what in (
      ('meta.batch_size', fed.train, 'meta-training task'),
      ('adapt.batch_size', fed.target_support, 'target task')):
    batch, largest = _get(config, field), int(np.max(np.asarray(tasks.count)))
    _check(batch <= largest,
           f'{field}={batch} is more than the {largest} local examples of the largest '
           f'{what}; use at most {largest} (or 0 for all of them)')
