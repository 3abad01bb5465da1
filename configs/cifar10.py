r"""CIFAR-10 with CNN-4 gated at conv3 (the paper's s.5, Tables 1-2).

  python -m experiments.main --config=configs/cifar10.py
  python -m experiments.main --config=configs/cifar10.py \
      --config.data.source=raw --config.data.dir=DIR   # DIR/cifar-10-batches-py

40 tasks of 2 classes with 221-2,000 images each (the paper: 221-2,792; the
upper end is lowered so 40 tasks fit in CIFAR-10's 6,000 images per class), 20
meta-training tasks (20 sampled per round, as in the paper) and 20 target
tasks; group lasso on the gating module.

Expected: not measured here: CIFAR-10 cannot be downloaded on the machines
this project was developed on. ``python -m experiments.bench`` measures its
speed on synthetic inputs of the same shapes.
"""

from configs import common


def get_config():
  config = common.get_config()
  config.data.name = 'cifar10'
  config.data.source = 'auto'
  config.data.split = 'all'
  config.data.num_tasks = 60
  config.data.num_targets = 20
  config.data.num_validation = 20
  config.data.classes_per_task = 2
  config.data.min_samples = 221
  config.data.max_samples = 1500
  config.model.name = 'cnn4'
  config.meta.rounds = 200
  config.meta.tasks_per_round = 20
  config.meta.local_steps = 1
  config.meta.batch_size = 64
  config.adapt.batch_size = 256
  config.eval_every = 10
  return config
