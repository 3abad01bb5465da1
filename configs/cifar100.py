r"""CIFAR-100 with CNN-7 gated at conv5 and conv6 (the paper's appendix).

  python -m experiments.main --config=configs/cifar100.py
  python -m experiments.main --config=configs/cifar100.py \
      --config.data.source=raw --config.data.dir=DIR   # DIR/cifar-100-python

Small local datasets: 100 tasks of 5 classes with 100-300 images each (the
appendix's exact range is lost from the paper copy), 80 meta-training tasks (20
sampled per round) and 20 target tasks.

Expected: not measured here: CIFAR-100 cannot be downloaded on the machines
this project was developed on.
"""

from configs import common


def get_config():
  config = common.get_config()
  config.data.name = 'cifar100'
  config.data.source = 'auto'
  config.data.split = 'all'
  config.data.num_tasks = 100
  config.data.num_targets = 20
  config.data.classes_per_task = 5
  config.data.min_samples = 100
  config.data.max_samples = 300
  config.model.name = 'cnn7'
  config.meta.rounds = 200
  config.meta.tasks_per_round = 20
  config.meta.local_steps = 1
  config.meta.batch_size = 64
  config.eval_every = 10
  return config
