"""Tasks as padded arrays, so sampled tasks are gathered by index inside jit.

Every task of a group (meta-training data, validation support and query,
target support and query) is padded to the largest task of that group, or to
a given bound: the task's rows come first, then padding rows of zeros with
label 0 and mask 0. A sampled set of tasks is then
``jax.tree.map(lambda a: a[idx], tasks)`` with static shapes, whatever the
task sizes (docs/design.md s.3, Algorithm 1 step 3).

A meta-training node trains on all of its local data (its support and query
samples together): only validation and target tasks need a held-out query.

A loss or score over a padded task is ``masked_mean`` of its per-row values:
the mean over the task's real rows, ``L(x; D)`` of docs/design.md (notation).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np


class TaskArrays(NamedTuple):
  """A group of T tasks padded to S rows.

  Attributes:
    x: (T, S, H, W, C) float32 images; padding rows are zeros.
    y: (T, S) int32 labels; padding rows are 0.
    mask: (T, S) float32, 1 on the task's rows, 0 on padding.
    count: (T,) int32 rows of each task (its rows are ``[0, count)``).
  """
  x: np.ndarray
  y: np.ndarray
  mask: np.ndarray
  count: np.ndarray


class FederatedData(NamedTuple):
  """The task groups of a federated partition (docs/design.md s.2, s.4).

  Attributes:
    train: meta-training tasks, all local data (support and query).
    validation_support, validation_query: validation tasks (for choosing
      hyperparameters; never reported as results).
    target_support, target_query: target tasks (the reported results).
  """
  train: TaskArrays
  validation_support: TaskArrays
  validation_query: TaskArrays
  target_support: TaskArrays
  target_query: TaskArrays


def task_arrays(images: np.ndarray, labels: np.ndarray,
                indices: Sequence[np.ndarray], rows: int = 0) -> TaskArrays:
  """Stacks the tasks given by dataset ``indices`` into padded arrays.

  Args:
    images: (N, H, W, C) float32 dataset images.
    labels: (N,) int dataset labels.
    indices: one array of dataset indices per task.
    rows: rows per task (0: the largest task's); at least the largest task.

  Returns:
    :class:`TaskArrays` with ``S = max(rows, max(len(i) for i in indices))``
    (at least 1).
  """
  counts = np.array([len(i) for i in indices], np.int32)
  rows = max(1, rows, int(counts.max(initial=0)))
  num_tasks = len(indices)
  x = np.zeros((num_tasks, rows, *images.shape[1:]), np.float32)
  y = np.zeros((num_tasks, rows), np.int32)
  mask = np.zeros((num_tasks, rows), np.float32)
  for t, idx in enumerate(indices):
    x[t, :len(idx)] = images[idx]
    y[t, :len(idx)] = labels[idx]
    mask[t, :len(idx)] = 1.0
  return TaskArrays(x=x, y=y, mask=mask, count=counts)


def masked_mean(values: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  r"""Mean of per-row ``values`` over the rows that ``mask`` marks as real (the last axis).

  .. math::

    \frac{\sum_b w_b v_b}{\max(\sum_b w_b, 1)}

  With 0/1 weights (``TaskArrays.mask``) this is the mean over the task's rows,
  and 0, never NaN, for an empty task (every weight 0), gradient included.
  A task's loss, for example::

    masked_mean(optax.softmax_cross_entropy_with_integer_labels(logits, y), mask)

  Args:
    values: (..., B) per-row values (a loss, 0/1 correctness), rows last; any
      leading axes (e.g. one per exit) are kept.
    mask: (B,) 0/1 validity weights; ``None`` means all ones (a plain mean).
  """
  if mask is None:
    return jnp.mean(values, axis=-1)
  mask = jnp.asarray(mask, values.dtype)
  return jnp.sum(mask * values, axis=-1) / jnp.maximum(jnp.sum(mask), 1.0)


def select_tasks(tasks: TaskArrays, idx) -> TaskArrays:
  """The tasks at ``idx`` (int or int array); works on numpy or jax, in jit."""
  return jax.tree.map(lambda a: a[idx], tasks)


def federated_arrays(images: np.ndarray, labels: np.ndarray, part,
                     rows: dict | None = None) -> FederatedData:
  """The padded arrays of a :class:`~mg.data.partition.Partition`.

  ``rows`` (``{'all', 'support', 'query'}``, e.g. ``partition.row_bounds``)
  pads every group to fixed sizes; by default each group to its largest task.
  """
  rows = rows or {}

  def group(tasks, split):
    if split == 'all':
      indices = [np.concatenate([part.support[t], part.query[t]]) for t in tasks]
    else:
      indices = [getattr(part, split)[t] for t in tasks]
    return task_arrays(images, labels, indices, rows.get(split, 0))

  validation, target = part.validation_tasks, part.target_tasks
  return FederatedData(
      train=group(part.train_tasks, 'all'),
      validation_support=group(validation, 'support'),
      validation_query=group(validation, 'query'),
      target_support=group(target, 'support'),
      target_query=group(target, 'query'),
  )
