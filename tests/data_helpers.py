"""Helpers shared by the tests: small data configs and config overrides."""

import ml_collections


def data_config(**overrides) -> ml_collections.ConfigDict:
  """A small valid ``config.data`` (digits, 6 tasks) with ``overrides``."""
  fields = dict(source='auto', name='digits', dir=None, split='all',
                num_tasks=6, num_targets=2, num_validation=None, classes_per_task=2,
                min_samples=20, max_samples=40, query_fraction=0.5)
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


def config_with(test_config, **overrides):
  """A type-unsafe copy of configs/test.py with ``'a.b': value`` overrides."""
  config = ml_collections.ConfigDict(test_config.to_dict(), type_safe=False)
  for field, value in overrides.items():
    *parents, last = field.split('.')
    node = config
    for part in parents:
      node = node[part]
    node[last] = value
  return config
