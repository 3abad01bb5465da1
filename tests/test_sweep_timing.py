"""The batched-against-sequential timing both systems' ``--bench`` share (mg.sweep.timing)."""

import json

import numpy as np

from mg.sweep import timing


def test_sides_alternate_and_the_figures_compare_them():
  calls = []

  def side(name, results):
    def run():
      calls.append(name)
      return results
    return run

  printed = []
  figures = timing.compare(
      side('batched', [np.array([0.5, 0.6]), None]),
      side('sequential', [np.array([0.5, 0.65]), None]),
      repeats=3, what='2 members', extra={'members': 2}, printer=printed.append)
  # the first repetition starts with the batched side, the next with the other
  assert calls == ['batched', 'sequential', 'sequential', 'batched', 'batched', 'sequential']
  assert len(figures['batched_s']) == len(figures['sequential_s']) == 3
  assert figures['speedup'] == [s / b for s, b in zip(figures['sequential_s'],
                                                      figures['batched_s'])]
  assert np.isclose(figures['max_accuracy_diff'], 0.05) and figures['same_divergence']
  assert figures['members'] == 2 and 'cores' in figures['machine']
  assert printed[0].startswith('benchmark: 2 members on ')
  assert json.loads(printed[-1]) == figures


def test_a_member_diverging_on_one_side_only_is_flagged():
  figures = timing.compare(lambda: [np.zeros(2), None], lambda: [np.zeros(2), np.ones(2)],
                           repeats=1, what='x', extra={}, printer=lambda line: None)
  assert not figures['same_divergence'] and figures['max_accuracy_diff'] == 0.0
