"""Checking an experiment config before any work starts.

Every message names the field, what is wrong and what to do, so a bad
``--config.field=value`` stops at once with one line instead of a traceback
minutes later. Data fields are checked by ``mg.data.validate``.
"""

from __future__ import annotations

from mg import data as data_lib
from mg import methods as methods_lib
from mg.federated import mapping
from mg import models
from mg.algorithms.metagater import ETA_SCHEDULES


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field."""


def _check(ok: bool, message: str):
  if not ok:
    raise ConfigError(message)


def _positive_int(config, field: str, allow_zero: bool = False):
  value = config
  for part in field.split('.'):
    value = value[part]
  low = 0 if allow_zero else 1
  _check(isinstance(value, int) and value >= low,
         f'{field}={value!r}: expected an integer >= {low}')


def _positive(config, field: str):
  value = config
  for part in field.split('.'):
    value = value[part]
  _check(isinstance(value, (int, float)) and value > 0,
         f'{field}={value!r}: expected a number > 0')


def validate(config) -> None:
  """Raises ``ConfigError`` (or ``mg.data.DataError``) for a config that cannot run."""
  methods = tuple(config.methods)
  _check(len(methods) > 0, 'methods is empty: name at least one of '
         f'{methods_lib.METHODS}')
  for m in methods:
    _check(m in methods_lib.METHODS,
           f'methods: unknown method {m!r}; expected some of {methods_lib.METHODS}')
  if 'metasnip' in methods:
    _check({'metagater', 'metagater_nogate'} <= set(methods),
           "methods: metasnip prunes MetaGater w/o gating's backbone at MetaGater's "
           "sparsity, so it needs 'metagater_nogate' and 'metagater' in methods too")
  _check(len(set(methods)) == len(methods), f'methods={methods}: a method is repeated')
  _check(config.model.name in models.NAMES,
         f'model.name={config.model.name!r}: expected one of {models.NAMES}')
  for field in ('repeats', 'eval_every', 'meta.rounds', 'meta.tasks_per_round',
                'model.gate_hidden'):
    _positive_int(config, field)
  for field in ('meta.local_steps', 'meta.batch_size', 'adapt.batch_size'):
    _positive_int(config, field, allow_zero=True)
  for field in ('meta.local_lr', 'meta.lam', 'meta.beta', 'adapt.lr', 'model.tau',
                'perfedavg.alpha', 'perfedavg.beta'):
    _positive(config, field)
  _check(config.meta.rho >= 0, f'meta.rho={config.meta.rho}: expected >= 0')
  alpha = config.meta.alpha
  _check(alpha is None or 0 < alpha <= 1,
         f'meta.alpha={alpha}: expected a number in (0, 1], or None for 2/(t+1)')
  _check(0.0 <= config.adapt.keep_frac < 1.0,
         f'adapt.keep_frac={config.adapt.keep_frac}: expected a fraction in [0, 1)')
  _check(config.meta.regularizer in ('group_lasso', 'lasso', 'none'),
         f'meta.regularizer={config.meta.regularizer!r}: expected group_lasso, '
         'lasso or none')
  _check(config.meta.eta in ETA_SCHEDULES,
         f'meta.eta={config.meta.eta!r}: expected one of {ETA_SCHEDULES}')
  _check(config.meta.mapping in ('auto',) + mapping.STRATEGIES,
         f'meta.mapping={config.meta.mapping!r}: expected one of '
         f"{('auto',) + mapping.STRATEGIES}")
  num_train = config.data.num_tasks - config.data.num_targets
  _check(config.meta.tasks_per_round <= num_train,
         f'meta.tasks_per_round={config.meta.tasks_per_round} is more than the '
         f'{num_train} meta-training tasks (data.num_tasks - data.num_targets); '
         'lower it or raise data.num_tasks')
  data_lib.validate(config.data)
