"""Federated partition of a labelled dataset into tasks (nodes).

The MetaGater experiments (paper s.5.1; docs/design.md s.2, s.6) give every node
``classes_per_task`` classes and a local dataset whose size lies in a range
(MNIST 1165-3834, CIFAR-10 221-2792 samples per node). Nodes are split into
meta-training tasks and target tasks; each node's data into a support (train)
and a query (test) part. Here, deterministically from ``seed``:

1. sizes: ``n_t`` uniform in ``[min_samples, max_samples]``, split as evenly as
   possible among the task's classes;
2. classes: task by task, largest first, the ``classes_per_task`` classes used
   by the fewest tasks so far, then those with the fewest samples promised so
   far, remaining ties at random. Every class serves about the same number of
   tasks (usage counts differ by at most one), the class sets stay random, and
   the samples asked of each class are balanced, so a draw that fits the data
   in total rarely fails for one class;
3. samples: drawn without replacement from per-class pools shuffled once, so no
   sample is in two tasks;
4. support/query: ``round(query_fraction * n_t)`` random samples of the task
   (at least one, leaving at least one) form the query, the rest the support;
5. roles: the tasks are shuffled; the last ``num_targets`` are target tasks,
   the ``num_validation`` before them validation tasks and the rest
   meta-training tasks.

Validation tasks are disjoint from meta-training and adapted and scored exactly
like targets; hyperparameters are chosen on them (``mg.sweep``), never on the
targets, whose scores are the reported results.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mg.data.config import check_partition_args
from mg.data.errors import DataError


@dataclasses.dataclass(frozen=True, eq=False)
class Partition:
  """Which samples each task holds, and which tasks are targets.

  Attributes:
    classes: (T, classes_per_task) int32, the classes of each task (sorted).
    class_sizes: (T, classes_per_task) int32, samples of each of those classes.
    support: T int64 arrays of dataset indices, the support (train) samples.
    query: T int64 arrays of dataset indices, the query (test) samples.
    num_targets: the last ``num_targets`` task ids are target tasks.
    num_classes: classes of the dataset.
    seed: the seed the partition was drawn with.
    num_validation: the ``num_validation`` task ids before the targets are
      validation tasks.
  """
  classes: np.ndarray
  class_sizes: np.ndarray
  support: tuple[np.ndarray, ...]
  query: tuple[np.ndarray, ...]
  num_targets: int
  num_classes: int
  seed: int
  num_validation: int = 0

  @property
  def num_tasks(self) -> int:
    return len(self.support)

  @property
  def num_train_tasks(self) -> int:
    return self.num_tasks - self.num_targets - self.num_validation

  @property
  def classes_per_task(self) -> int:
    return self.classes.shape[1]

  @property
  def train_tasks(self) -> np.ndarray:
    """Task ids of the meta-training tasks, ``[0, num_train_tasks)``."""
    return np.arange(self.num_train_tasks)

  @property
  def validation_tasks(self) -> np.ndarray:
    """Task ids of the validation tasks, just before the targets."""
    return np.arange(self.num_train_tasks, self.num_tasks - self.num_targets)

  @property
  def target_tasks(self) -> np.ndarray:
    """Task ids of the target tasks, the last ``num_targets``."""
    return np.arange(self.num_tasks - self.num_targets, self.num_tasks)

  def role(self, task: int) -> str:
    if task < self.num_train_tasks:
      return 'train'
    return 'validation' if task < self.num_tasks - self.num_targets else 'target'

  def stats(self) -> dict:
    """JSON-able summary: sizes, class usage and one entry per task."""
    n_support = np.array([len(s) for s in self.support])
    n_query = np.array([len(q) for q in self.query])
    sizes = n_support + n_query

    def summary(values):
      return {'min': int(values.min()), 'max': int(values.max()),
              'mean': round(float(values.mean()), 2)}

    return {
        'num_tasks': self.num_tasks,
        'num_train_tasks': self.num_train_tasks,
        'num_validation': self.num_validation,
        'num_targets': self.num_targets,
        'num_classes': self.num_classes,
        'classes_per_task': self.classes_per_task,
        'seed': self.seed,
        'samples_per_task': {**summary(sizes), 'total': int(sizes.sum())},
        'support_size': summary(n_support),
        'query_size': summary(n_query),
        'class_usage': np.bincount(self.classes.ravel(),
                                   minlength=self.num_classes).tolist(),
        'samples_per_class': np.bincount(
            self.classes.ravel(), weights=self.class_sizes.ravel(),
            minlength=self.num_classes).astype(int).tolist(),
        'tasks': [{'id': t, 'role': self.role(t),
                   'classes': self.classes[t].tolist(),
                   'class_sizes': self.class_sizes[t].tolist(),
                   'n_support': int(n_support[t]), 'n_query': int(n_query[t])}
                  for t in range(self.num_tasks)],
    }


def balanced_classes(rng: np.random.Generator, sizes: np.ndarray,
                     num_classes: int, classes_per_task: int) -> np.ndarray:
  """(T, k) class sets balancing tasks, then samples, per class (step 2)."""
  usage = np.zeros(num_classes, np.int64)
  demand = np.zeros(num_classes, np.int64)
  classes = np.empty((len(sizes), classes_per_task), np.int32)
  for t in np.argsort(-sizes, kind='stable'):
    order = np.lexsort((rng.random(num_classes), demand, usage))
    chosen = np.sort(order[:classes_per_task])
    usage[chosen] += 1
    demand[chosen] += sizes[t] // classes_per_task
    classes[t] = chosen
  return classes


def even_split(sizes: np.ndarray, parts: int) -> np.ndarray:
  """(T, parts) shares of each size, differing by at most one, summing to it."""
  base, extra = np.divmod(sizes, parts)
  return (base[:, None] + (np.arange(parts) < extra[:, None])).astype(np.int32)


def _check_supply(pools, classes, class_sizes, num_tasks, min_samples,
                  max_samples, seed) -> None:
  """Raises DataError naming the class with the largest shortfall, if any."""
  num_classes = len(pools)
  available = np.array([len(p) for p in pools])
  total = int(available.sum())
  advice = ('Use fewer tasks (data.num_tasks), a smaller range '
            '(data.min_samples / data.max_samples), or more data '
            "(data.split='all').")
  if num_tasks * min_samples > total:
    raise DataError(
        f'The partition cannot be satisfied: {num_tasks} tasks of at least '
        f'{min_samples} samples need {num_tasks * min_samples} samples, but '
        f'the dataset has {total}. {advice}')
  needed = np.bincount(classes.ravel(), weights=class_sizes.ravel(),
                       minlength=num_classes).astype(np.int64)
  shortfall = needed - available
  worst = int(np.argmax(shortfall))
  if shortfall[worst] > 0:
    users = int((classes == worst).sum())
    raise DataError(
        f'The partition cannot be satisfied: class {worst} needs '
        f'{needed[worst]} samples for its {users} tasks (sizes drawn from '
        f'[{min_samples}, {max_samples}] with seed {seed}) but the dataset '
        f'has {available[worst]}. {advice}')


def partition(labels, num_classes: int, *, num_tasks: int,
              classes_per_task: int, min_samples: int, max_samples: int,
              query_fraction: float, num_targets: int, seed: int,
              num_validation: int = 0) -> Partition:
  """Draws a federated partition of ``labels`` (see the module docstring).

  Args:
    labels: (N,) integer class ids in ``[0, num_classes)``.
    num_classes: classes of the dataset.
    num_tasks: tasks (nodes) in all, meta-training plus target.
    classes_per_task: distinct classes held by each task.
    min_samples: smallest task size (support + query).
    max_samples: largest task size.
    query_fraction: share of each task held out as its query split.
    num_targets: target tasks (never seen in meta-training).
    seed: seed of the numpy Generator; the same seed gives the same partition.
    num_validation: validation tasks (never seen in meta-training either).

  Returns:
    A :class:`Partition` of dataset indices.

  Raises:
    DataError: bad arguments, or too few samples of a class for the draw.
  """
  check_partition_args(
      num_classes=num_classes, num_tasks=num_tasks,
      classes_per_task=classes_per_task, min_samples=min_samples,
      max_samples=max_samples, query_fraction=query_fraction,
      num_targets=num_targets, num_validation=num_validation)
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f'labels must be a 1-D integer array, got shape '
                    f'{labels.shape} {labels.dtype}.')
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise DataError(f'labels must lie in [0, {num_classes}), got '
                    f'[{labels.min()}, {labels.max()}].')
  rng = np.random.default_rng(seed)
  pools = [rng.permutation(np.flatnonzero(labels == c))
           for c in range(num_classes)]
  sizes = rng.integers(min_samples, max_samples, size=num_tasks, endpoint=True)
  class_sizes = even_split(sizes, classes_per_task)
  classes = balanced_classes(rng, sizes, num_classes, classes_per_task)
  _check_supply(pools, classes, class_sizes, num_tasks, min_samples,
                max_samples, seed)

  taken = np.zeros(num_classes, np.int64)
  support, query = [], []
  for t in range(num_tasks):
    chunks = []
    for c, n in zip(classes[t], class_sizes[t]):
      chunks.append(pools[c][taken[c]:taken[c] + n])
      taken[c] += n
    samples = rng.permutation(np.concatenate(chunks))
    n_query = query_size(len(samples), query_fraction)
    query.append(samples[:n_query])
    support.append(samples[n_query:])

  order = rng.permutation(num_tasks)  # which tasks become targets
  return Partition(
      classes=classes[order], class_sizes=class_sizes[order],
      support=tuple(support[t] for t in order),
      query=tuple(query[t] for t in order),
      num_targets=num_targets, num_classes=num_classes, seed=int(seed),
      num_validation=num_validation)


def query_size(n: int, query_fraction: float) -> int:
  """Query samples of a task of ``n`` (step 4): at least one, leaving one."""
  return int(np.clip(round(query_fraction * n), 1, n - 1))


def row_bounds(min_samples: int, max_samples: int,
               query_fraction: float) -> dict:
  """The most rows a task can have in each split, whatever the seed.

  Padding every partition's arrays to these bounds gives every repeat (each
  draws its own partition) the same shapes, so nothing is compiled again.

  Returns:
    ``{'all': ..., 'support': ..., 'query': ...}``.
  """
  sizes = range(min_samples, max_samples + 1)
  queries = [query_size(n, query_fraction) for n in sizes]
  return {'all': max_samples, 'query': max(queries),
          'support': max(n - q for n, q in zip(sizes, queries))}


def describe(part: Partition) -> str:
  """A few lines for the run's log: tasks, sizes and class usage."""
  s = part.stats()

  def line(d):
    return f"min {d['min']}, max {d['max']}, mean {d['mean']}"

  counts = s['class_usage']
  if len(counts) <= 20:
    usage = ' '.join(f'{c}:{u}' for c, u in enumerate(counts))
  else:
    usage = f'min {min(counts)}, max {max(counts)}'
  return '\n'.join([
      f"partition (seed {s['seed']}): {s['num_tasks']} tasks = "
      f"{s['num_train_tasks']} meta-training + {s['num_validation']} validation + "
      f"{s['num_targets']} target, "
      f"{s['classes_per_task']} of {s['num_classes']} classes each",
      f"  samples per task: {line(s['samples_per_task'])}, "
      f"total {s['samples_per_task']['total']}",
      f"  support per task: {line(s['support_size'])}",
      f"  query per task:   {line(s['query_size'])}",
      f'  tasks per class:  {usage}',
  ])
