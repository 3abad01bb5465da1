r"""CIFAR-10 with CNN-4 gated at conv3 (the paper's s.5, Tables 1-2).

  python -m experiments.main --config=configs/cifar10.py --config.data.dir=DIR
  python -m experiments.main --config=configs/cifar10.py:quick --config.data.dir=DIR

``DIR/cifar-10-batches-py`` holds the official python files (on a machine
without internet: ``python ../shared/tools/get_cifar10.py --out DIR``).

60 tasks of 2 classes with 221-1,500 images each (the paper: 221-2,792; the
upper end is lowered so 60 tasks fit in CIFAR-10's 6,000 images per class):
20 meta-training tasks (20 sampled per round, one local update, as in the
paper), 20 validation tasks (for choosing settings; never reported) and 20
target tasks; group lasso on the gating module; 200 rounds; 3 repeats, each
with its own partition.

Settings: the shared defaults of ``configs/common.py`` for every method (no
method is tuned: on a 2-core CPU one CIFAR-10 member costs as much as a run,
so ``configs/sweeps/cifar10.py`` is for an accelerator).

``:quick`` is the variant meant to finish all methods and 3 repeats within an
hour on a 2-core CPU: 30 rounds of 10 sampled tasks (of 40 meta-training
tasks), 10 validation and 10 target tasks, one evaluation (after the last
round), adaptation on 128 support images. A small training budget: its
accuracies are those of briefly trained networks.

Expected: README.md, "CIFAR-10", gives the measured tables, times and the
full config's time per round.
"""

from configs import common


def get_config(variant: str = 'full'):
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
  config.repeats = 3
  config.meta.compare_unaccelerated = True
  if variant == 'quick':
    config.data.num_targets = 10
    config.data.num_validation = 10
    config.meta.rounds = 40
    config.meta.tasks_per_round = 10
    config.adapt.batch_size = 128
    config.eval_every = 30
  elif variant != 'full':
    raise ValueError(f"configs/cifar10.py:{variant}: expected 'full' or 'quick'")
  return config
