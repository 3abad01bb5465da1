"""From ``config.data`` to the federated task arrays, in one call.

``build`` loads the dataset (:mod:`mg.data.sources`), draws the federated
partition (:mod:`mg.data.partition`) and stacks the padded task arrays
(:mod:`mg.data.tasks`), as set up in the MetaGater experiments (paper s.5.1;
DESIGN.md s.6).
"""

from __future__ import annotations

from mg.data.partition import Partition, partition
from mg.data.sources import load
from mg.data.tasks import FederatedData, federated_arrays


def build(cfg, seed: int, check=None) -> tuple[FederatedData, Partition, dict]:
  """Loads, partitions and stacks the data named by ``config.data``.

  Args:
    cfg: the ``config.data`` ConfigDict.
    seed: seed of the partition (the run's seed).
    check: optional ``check(dataset)`` called between loading and partitioning
      (e.g. to check a config against the dataset's size); may raise.

  Returns:
    ``(data, partition, info)``: the numpy :class:`FederatedData`, the
    :class:`Partition`, and ``info`` = {'name', 'input_shape', 'num_classes',
    'num_examples', 'source', 'splits_loaded'} describing what was read.

  Raises:
    DataError: any bad input (see :func:`mg.data.load`, :func:`partition`).
  """
  dataset = load(cfg)
  if check is not None:
    check(dataset)
  part = partition(
      dataset.labels, dataset.num_classes, num_tasks=cfg['num_tasks'],
      classes_per_task=cfg['classes_per_task'],
      min_samples=cfg['min_samples'], max_samples=cfg['max_samples'],
      query_fraction=cfg['query_fraction'], num_targets=cfg['num_targets'],
      seed=seed)
  data = federated_arrays(dataset.images, dataset.labels, part)
  info = {
      'name': dataset.name,
      'input_shape': tuple(dataset.images.shape[1:]),
      'num_classes': dataset.num_classes,
      'num_examples': int(len(dataset.labels)),
      'source': dataset.source,
      'splits_loaded': dataset.splits,
  }
  return data, part, info
