"""Each repeat draws its own partition, and results report both spreads (issue 11)."""

import numpy as np

from mg.metagater import run as run_lib


def test_repeats_draw_different_partitions(test_config, tmp_path):
  config = test_config.copy_and_resolve_references()
  config.methods = ('fedavg',)
  config.meta.rounds = 1
  config.repeats = 2
  results = run_lib.run(config, str(tmp_path / 'run'))
  first, second = results['partitions']
  assert (first['seed'], second['seed']) == (config.seed, config.seed + 1)
  assert results['partition'] == first
  classes = lambda p: [t['classes'] for t in p['tasks']]
  sizes = lambda p: [(t['n_support'], t['n_query']) for t in p['tasks']]
  assert classes(first) != classes(second) or sizes(first) != sizes(second)
  assert first['num_validation'] == second['num_validation'] == 2
  row = results['rows'][0]
  assert len(row['repeat_accuracy']) == 2 and len(row['target_accuracy']) == 4
  assert row['accuracy_std_repeats'] == np.std(row['repeat_accuracy'])
  per_repeat = np.reshape(row['target_accuracy'], (2, 2))
  assert np.isclose(row['accuracy_std_targets'], np.std(per_repeat, axis=1).mean())
