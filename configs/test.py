r"""A tiny run of every method for the tests: seconds on a laptop CPU.

  python -m experiments.main --config=configs/test.py --workdir=/tmp/mg-test

Digits, 8 tasks of 2 classes (6 meta-training, 2 targets), CNN-4 with a gate
at conv3, 2 rounds of 2 sampled tasks and 1 local step. It checks that the
whole pipeline runs and writes its outputs; its accuracies mean nothing.
"""

from configs import common


def get_config():
  config = common.get_config()
  config.data.name = 'digits'
  config.data.source = 'digits'
  config.data.num_tasks = 8
  config.data.num_targets = 2
  config.data.min_samples = 20
  config.data.max_samples = 40
  config.model.name = 'cnn4'
  config.meta.rounds = 2
  config.meta.tasks_per_round = 2
  config.meta.local_steps = 1
  config.meta.batch_size = 8
  config.eval_every = 1
  config.progress = False
  config.compile_cache_dir = ''  # tests compile afresh, and write nothing outside
  return config
