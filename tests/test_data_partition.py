"""Invariants of the federated partition (mg.data.partition)."""

import json

import numpy as np
import pytest

import mg.data

# 10 classes x 300 samples, class c at indices [300c, 300c + 300) shuffled.
LABELS = np.random.default_rng(123).permutation(np.repeat(np.arange(10), 300))
ARGS = dict(num_tasks=12, classes_per_task=2, min_samples=60, max_samples=200,
            query_fraction=0.3, num_targets=4)


def draw(seed=0, labels=LABELS, num_classes=10, **overrides):
  return mg.data.partition(labels, num_classes, seed=seed,
                           **{**ARGS, **overrides})


def test_no_sample_in_two_tasks_and_support_query_disjoint():
  part = draw()
  every = np.concatenate(part.support + part.query)
  assert len(every) == len(np.unique(every))
  for s, q in zip(part.support, part.query):
    assert not set(s.tolist()) & set(q.tolist())


def test_classes_and_sizes():
  part = draw()
  assert part.classes.shape == (12, 2)
  for t in range(part.num_tasks):
    samples = np.concatenate([part.support[t], part.query[t]])
    assert ARGS['min_samples'] <= len(samples) <= ARGS['max_samples']
    # Exactly the task's classes, split evenly between them.
    counts = np.bincount(LABELS[samples], minlength=10)
    assert set(np.flatnonzero(counts)) == set(part.classes[t].tolist())
    assert np.ptp(counts[part.classes[t]]) <= 1
    np.testing.assert_array_equal(counts[part.classes[t]], part.class_sizes[t])
    assert len(part.query[t]) == round(0.3 * len(samples))


def test_class_usage_is_balanced():
  part = draw(num_tasks=13, num_targets=3)
  usage = np.bincount(part.classes.ravel(), minlength=10)
  assert usage.sum() == 26 and usage.max() - usage.min() <= 1


def test_roles():
  part = draw()
  np.testing.assert_array_equal(part.train_tasks, np.arange(8))
  np.testing.assert_array_equal(part.target_tasks, np.arange(8, 12))
  assert part.num_train_tasks == 8 and part.role(7) == 'train'
  assert part.role(8) == 'target'


def test_validation_tasks_sit_between_training_and_targets():
  part = draw(num_validation=3)
  np.testing.assert_array_equal(part.train_tasks, np.arange(5))
  np.testing.assert_array_equal(part.validation_tasks, np.arange(5, 8))
  np.testing.assert_array_equal(part.target_tasks, np.arange(8, 12))
  assert [part.role(t) for t in (4, 5, 7, 8)] == ['train', 'validation', 'validation',
                                                  'target']
  assert part.stats()['num_validation'] == 3
  # The same draw as without validation tasks: only the roles differ.
  plain = draw()
  for a, b in zip(part.support, plain.support):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(mg.data.DataError, match='num_validation=8: some tasks'):
    draw(num_validation=8)


def test_row_bounds_hold_for_every_size():
  bounds = mg.data.row_bounds(60, 200, 0.3)
  assert bounds == {'all': 200, 'query': 60, 'support': 140}
  for seed in range(5):
    part = draw(seed=seed)
    assert max(map(len, part.support)) <= bounds['support']
    assert max(map(len, part.query)) <= bounds['query']


def test_deterministic_from_seed():
  a, b, c = draw(seed=7), draw(seed=7), draw(seed=8)
  np.testing.assert_array_equal(a.classes, b.classes)
  for x, y in zip(a.support + a.query, b.support + b.query):
    np.testing.assert_array_equal(x, y)
  assert a.stats() == b.stats()
  assert any(not np.array_equal(x, y) for x, y in zip(a.support, c.support))


def test_query_at_least_one_each_side():
  part = draw(min_samples=2, max_samples=3, query_fraction=0.01,
              num_tasks=5, num_targets=1)
  assert all(len(q) == 1 for q in part.query)
  assert all(len(s) >= 1 for s in part.support)
  part = draw(min_samples=2, max_samples=2, query_fraction=0.99,
              num_tasks=5, num_targets=1)
  assert all(len(s) == 1 and len(q) == 1
             for s, q in zip(part.support, part.query))


def test_stats_json_and_describe():
  part = draw()
  stats = part.stats()
  assert json.loads(json.dumps(stats)) == stats
  sizes = [t['n_support'] + t['n_query'] for t in stats['tasks']]
  assert stats['samples_per_task']['total'] == sum(sizes)
  assert stats['samples_per_task']['min'] == min(sizes)
  assert stats['num_train_tasks'] == 8 and stats['num_targets'] == 4
  assert sum(stats['class_usage']) == 24
  assert sum(stats['samples_per_class']) == sum(sizes)
  assert [t['role'] for t in stats['tasks']] == ['train'] * 8 + ['target'] * 4
  text = mg.data.describe(part)
  assert '12 tasks = 8 meta-training + 0 validation + 4 target' in text
  assert f"total {sum(sizes)}" in text


def test_too_few_samples_names_the_class():
  # One class per task, each class used once: a task above 300 cannot be met.
  with pytest.raises(mg.data.DataError,
                     match=r'class \d+ needs 3\d\d samples for its 1 tasks.*'
                     r'has 300\. Use fewer tasks'):
    draw(num_tasks=10, num_targets=2, classes_per_task=1, min_samples=250,
         max_samples=400)
  with pytest.raises(mg.data.DataError, match='need 6000 samples'):
    draw(num_tasks=20, num_targets=5, min_samples=300, max_samples=300)


@pytest.mark.parametrize('overrides, message', [
    (dict(num_targets=12), 'num_targets=12 must be smaller'),
    (dict(classes_per_task=11), 'exceeds the 10 classes'),
    (dict(min_samples=300, max_samples=200), 'min_samples=300 exceeds'),
    (dict(query_fraction=1.0), 'strictly between 0 and 1'),
    (dict(num_tasks=0), 'num_tasks=0 must be a positive integer'),
    (dict(min_samples=1), 'min_samples=1 is too small'),
])
def test_bad_arguments(overrides, message):
  with pytest.raises(mg.data.DataError, match=message):
    draw(**overrides)


def test_labels_outside_the_classes():
  with pytest.raises(mg.data.DataError, match=r'labels must lie in \[0, 9\)'):
    draw(num_classes=9)
