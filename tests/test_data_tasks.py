"""Padded task arrays and build() end to end on digits."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mg.data
from data_helpers import data_config


def test_task_arrays_pad_after_rows():
  images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1) + 1
  labels = np.arange(10, dtype=np.int32)
  tasks = mg.data.task_arrays(images, labels, [np.array([3, 1]),
                                               np.array([9, 0, 5, 7])])
  assert tasks.x.shape == (2, 4, 1, 1, 1) and tasks.x.dtype == np.float32
  np.testing.assert_array_equal(tasks.count, [2, 4])
  np.testing.assert_array_equal(tasks.y, [[3, 1, 0, 0], [9, 0, 5, 7]])
  np.testing.assert_array_equal(tasks.mask, [[1, 1, 0, 0], [1, 1, 1, 1]])
  np.testing.assert_array_equal(tasks.x[:, :, 0, 0, 0],
                                [[4, 2, 0, 0], [10, 1, 6, 8]])
  assert tasks.y.dtype == np.int32 and tasks.count.dtype == np.int32



def _cross_entropy(logits, labels, mask=None):
  return mg.data.masked_mean(
      optax.softmax_cross_entropy_with_integer_labels(logits, labels), mask)


def _accuracy(logits, labels, mask=None):
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return mg.data.masked_mean(correct, mask)


def test_masked_mean_cross_entropy_and_accuracy():
  logits = jnp.array([[0.0, 0.0, 0.0],
                      [2.0, 0.0, 0.0],
                      [0.0, 5.0, 0.0],
                      [9.0, 9.0, 9.0]])
  labels = jnp.array([0, 0, 2, 1])
  weights = jnp.array([1.0, 1.0, 1.0, 0.0])
  per_example = [np.log(3.0), np.log(np.exp(2.0) + 2.0) - 2.0,
                 np.log(np.exp(5.0) + 2.0)]
  np.testing.assert_allclose(_cross_entropy(logits, labels, weights),
                             np.mean(per_example), rtol=1e-6)
  # Argmax picks the first of ties: rows 0, 1 right, row 2 wrong.
  np.testing.assert_allclose(_accuracy(logits, labels, weights), 2 / 3)
  np.testing.assert_allclose(_accuracy(logits, labels), 2 / 4)


def test_masked_mean_with_all_weights_zero():
  logits = jnp.ones((3, 4))
  labels = jnp.zeros(3, jnp.int32)
  zeros = jnp.zeros(3)
  assert float(_cross_entropy(logits, labels, zeros)) == 0.0
  assert float(_accuracy(logits, labels, zeros)) == 0.0
  grad = jax.grad(_cross_entropy)(logits, labels, zeros)
  np.testing.assert_array_equal(grad, np.zeros((3, 4)))


def test_select_tasks_inside_jit():
  images = np.random.default_rng(0).normal(size=(30, 2, 2, 1)).astype(
      np.float32)
  labels = np.arange(30, dtype=np.int32) % 3
  idx_sets = [np.arange(5 * t, 5 * t + 2 + t) for t in range(5)]
  tasks = jax.device_put(mg.data.task_arrays(images, labels, idx_sets))

  @jax.jit
  def masked_label_sum(tasks, idx):
    picked = mg.data.select_tasks(tasks, idx)
    return jnp.sum(picked.y * picked.mask, axis=1), picked.count

  sums, counts = masked_label_sum(tasks, jnp.array([4, 1]))
  np.testing.assert_array_equal(counts, [6, 3])
  np.testing.assert_array_equal(
      sums, [labels[idx_sets[4]].sum(), labels[idx_sets[1]].sum()])


def test_build_digits_matches_partition():
  data, part, info = mg.data.build(data_config(), seed=3)
  assert info == {'name': 'digits', 'input_shape': (8, 8, 1),
                  'num_classes': 10, 'num_examples': 1797,
                  'source': 'digits', 'splits_loaded': ('all',)}
  assert json.dumps(part.stats())
  dataset = mg.data.load(data_config())
  # A meta-training node holds all its local data; validation and targets a split.
  every = [np.concatenate([s, q]) for s, q in zip(part.support, part.query)]
  groups = {'train': (part.train_tasks, every),
            'validation_support': (part.validation_tasks, part.support),
            'validation_query': (part.validation_tasks, part.query),
            'target_support': (part.target_tasks, part.support),
            'target_query': (part.target_tasks, part.query)}
  bounds = mg.data.row_bounds(20, 40, 0.5)
  assert part.num_validation == 2 and len(part.train_tasks) == 2
  for field, (task_ids, indices) in groups.items():
    tasks = getattr(data, field)
    assert tasks.x.shape[0] == len(task_ids)
    # Padded to bounds that hold for any seed: every repeat has the same shapes.
    assert tasks.x.shape[1] == bounds[field.split('_')[-1] if '_' in field else 'all']
    assert tasks.x.shape[1] >= max(len(indices[t]) for t in task_ids)
    for row, t in enumerate(task_ids):
      n = len(indices[t])
      assert tasks.count[row] == n and tasks.mask[row].sum() == n
      np.testing.assert_array_equal(tasks.x[row, :n],
                                    dataset.images[indices[t]])
      np.testing.assert_array_equal(tasks.y[row, :n],
                                    dataset.labels[indices[t]])
      assert not tasks.x[row, n:].any() and not tasks.y[row, n:].any()
  # Same seed, same data.
  again, _, _ = mg.data.build(data_config(), seed=3)
  jax.tree.map(np.testing.assert_array_equal, data, again)


def test_build_unsatisfiable_partition_on_digits():
  with pytest.raises(mg.data.DataError, match='cannot be satisfied'):
    mg.data.build(data_config(num_tasks=20, min_samples=150, max_samples=160),
                  seed=0)
