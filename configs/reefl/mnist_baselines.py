r"""ReeFL against its baselines on MNIST: ``configs/reefl/mnist.py`` with every method.

  python -m experiments.main --config=configs/reefl/mnist_baselines.py \
      --config.data.dir=DIR

Same data, backbone, tiers, rounds and local training as ``reefl_mnist.py``;
the methods are ReeFL, ReeFL with every client at the full budget (the upper
bound) and the paper's baselines (ExclusiveFL, InclusiveFL with and without
momentum distillation, DepthFL with FedAvg and with FedDyn, ScaleFL; see
``mg.reefl.algorithms.baselines``), each with the public code's own settings
(``config.baselines``). The baselines replace Ree by one ``LayerNorm + Linear``
head per exit.

How the settings were chosen: each method's starting learning rate on the 10
validation clients, never on the test split, by ``configs/reefl/sweeps/mnist.py``
(3 values per method, equal effort) at the ``:quick`` budget (50 rounds); the
values are ``configs/reefl/mnist.py``'s ``PER_METHOD_LR``, the rest the public
code's. docs/reefl_results.md has the tuned 3-seed table at ``:quick``,
measured with Ree and the heads drawn as the backbone (add
``--config.model.head_init_std=0.0``; the config now draws them at 0.02):

  python -m experiments.main --config=configs/reefl/mnist_baselines.py:quick \
      --config.data.dir=DIR

Earlier, untuned (every method at the code's settings), only as a short run, before
validation clients existed (all 100
clients training, as ``--config.data.num_validation_clients=0``;
``--config.fl.rounds=30 --config.fl.kd_rounds=9
--config.eval_every=10``, one seed, the methods split over three processes on a
2-core CPU at load 15-20; 27-36 min each): mean over exits at round 30 of ReeFL
56.3%, ReeFL at full budget 57.3, ExclusiveFL 60.6, InclusiveFL 47.2 (45.7 w/o
momentum distillation), DepthFL 57.3 (55.7 with FedDyn), ScaleFL 38.4. The full
150 rounds x 3 seeds were not run; see docs/reefl_results.md.
"""

from configs.reefl import common as reefl_common, mnist as reefl_mnist


def get_config(variant: str = 'full'):
  """``full`` or ``quick`` as in ``configs/reefl/mnist.py``."""
  config = reefl_mnist.get_config(variant)
  config.methods = ('reefl',) + reefl_common.BASELINES
  return config
