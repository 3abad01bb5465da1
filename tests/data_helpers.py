"""Helpers shared by the data tests."""

import ml_collections


def data_config(**overrides) -> ml_collections.ConfigDict:
  """A small valid ``config.data`` (digits, 6 tasks) with ``overrides``."""
  fields = dict(source='auto', name='digits', dir=None, split='all',
                num_tasks=6, num_targets=2, num_validation=None, classes_per_task=2,
                min_samples=20, max_samples=40, query_fraction=0.5)
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)
