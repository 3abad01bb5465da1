r"""The offline default: scikit-learn's handwritten digits, every method.

  python -m experiments.main --config=configs/digits.py

Reproduces the structure of the paper's MNIST/CIFAR-10 comparison (Tables 1-2,
Fig. 4) on the 1,797 8x8 UCI digits that ship inside scikit-learn, so it runs
anywhere without a download: 20 tasks (nodes) of 2 classes and 40-100 images
each, 10 meta-training tasks (5 sampled per round), 5 validation tasks and 5
target tasks; CNN-4 with a channel gate at conv3; 50 rounds of 5 local steps;
3 repeats, each with its own partition.

Settings: every method's own step sizes and strengths (``per_method``) were
chosen on the 5 validation tasks by ``configs/sweeps/digits.py`` (9
configurations per method, 3 x 3 over two of its own fields, at seeds 0 and 1;
never on the targets):

  python -m experiments.sweep --config=configs/digits.py \
      --sweep=configs/sweeps/digits.py --workdir=runs/sweep-digits

Expected: docs/metagater_results.md, gives what was measured with the command
above.
"""

from configs import common


def get_config():
  config = common.get_config()
  config.data.name = 'digits'
  config.data.source = 'digits'
  config.data.num_tasks = 20
  config.data.num_targets = 5
  config.data.num_validation = 5
  config.data.classes_per_task = 2
  config.data.min_samples = 40
  config.data.max_samples = 100
  config.model.name = 'cnn4'
  config.meta.rounds = 50
  config.meta.tasks_per_round = 5
  config.meta.local_steps = 5
  config.meta.batch_size = 16
  config.eval_every = 5
  config.repeats = 3
  config.meta.compare_unaccelerated = True  # also alpha_t = 1: loss.png, curves.png
  # Chosen on validation tasks by configs/sweeps/digits.py (see above); other
  # fields of per_method: the shared defaults.
  tuned = config.per_method
  tuned.fedavg.local_lr, tuned.fedavg.adapt_lr = 0.05, 0.05
  tuned.perfedavg_fo.alpha, tuned.perfedavg_fo.beta = 0.01, 0.05
  tuned.perfedavg_hf.alpha, tuned.perfedavg_hf.beta = 0.003, 0.02
  tuned.metagater_nogate.beta, tuned.metagater_nogate.adapt_lr = 1.0, 0.05
  tuned.metagater.beta, tuned.metagater.rho = 1.0, 0.03
  tuned.metagater_unaccelerated.beta, tuned.metagater_unaccelerated.rho = 1.0, 0.03
  return config
