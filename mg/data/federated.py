"""From ``config.data`` to the federated task arrays.

``build`` loads the dataset (:mod:`mg.data.sources`), draws the federated
partition (:mod:`mg.data.partition`) and stacks the padded task arrays
(:mod:`mg.data.tasks`), as set up in the MetaGater experiments (paper s.5.1;
docs/design.md s.6). A run of several repeats loads once (``load_checked``) and
draws one partition per repeat (``partition_for``, ``arrays_for``) with seed
``config.seed + repeat``.
"""

from __future__ import annotations

from mg.data.config import num_validation
from mg.data.partition import Partition, partition, row_bounds
from mg.data.sources import Dataset, load
from mg.data.tasks import FederatedData, federated_arrays


def load_checked(cfg, check=None) -> Dataset:
  """``load(cfg)``, then ``check(dataset)`` if given (it may raise)."""
  dataset = load(cfg)
  if check is not None:
    check(dataset)
  return dataset


def partition_for(dataset: Dataset, cfg, seed: int) -> Partition:
  """The partition of ``dataset`` that ``config.data`` and ``seed`` draw."""
  return partition(
      dataset.labels, dataset.num_classes, num_tasks=cfg['num_tasks'],
      classes_per_task=cfg['classes_per_task'],
      min_samples=cfg['min_samples'], max_samples=cfg['max_samples'],
      query_fraction=cfg['query_fraction'], num_targets=cfg['num_targets'],
      num_validation=num_validation(cfg), seed=seed)


def arrays_for(dataset: Dataset, cfg, part: Partition) -> FederatedData:
  """The padded task arrays of ``part``.

  Padded to bounds that do not depend on the seed, so every repeat's partition
  has the same shapes and reuses the compiled programs.
  """
  rows = row_bounds(cfg['min_samples'], cfg['max_samples'], cfg['query_fraction'])
  return federated_arrays(dataset.images, dataset.labels, part, rows)


def info_of(dataset: Dataset) -> dict:
  """What was read: name, input shape, classes, size, source, splits."""
  return {
      'name': dataset.name,
      'input_shape': tuple(dataset.images.shape[1:]),
      'num_classes': dataset.num_classes,
      'num_examples': int(len(dataset.labels)),
      'source': dataset.source,
      'splits_loaded': dataset.splits,
  }


def build(cfg, seed: int, check=None) -> tuple[FederatedData, Partition, dict]:
  """Loads, partitions and stacks the data named by ``config.data``.

  Args:
    cfg: the ``config.data`` ConfigDict.
    seed: seed of the partition (a run's seed plus the repeat).
    check: optional ``check(dataset)`` called between loading and partitioning
      (e.g. to check a config against the dataset's size); may raise.

  Returns:
    ``(data, partition, info)``: the numpy :class:`FederatedData`, the
    :class:`Partition`, and ``info`` = {'name', 'input_shape', 'num_classes',
    'num_examples', 'source', 'splits_loaded'} describing what was read.

  Raises:
    DataError: any bad input (see :func:`mg.data.load`, :func:`partition`).
  """
  dataset = load_checked(cfg, check)
  part = partition_for(dataset, cfg, seed)
  return arrays_for(dataset, cfg, part), part, info_of(dataset)
