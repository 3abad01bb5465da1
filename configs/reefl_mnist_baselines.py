r"""ReeFL against its baselines on MNIST: ``configs/reefl_mnist.py`` with every method.

  python -m experiments.main --config=configs/reefl_mnist_baselines.py \
      --config.data.dir=../shared/data/mnist

Same data, backbone, tiers, rounds and local training as ``reefl_mnist.py``;
the methods are ReeFL, ReeFL with every client at the full budget (the upper
bound) and the paper's baselines (ExclusiveFL, InclusiveFL with and without
momentum distillation, DepthFL with FedAvg and with FedDyn, ScaleFL; see
``mg.algorithms.baselines``), each with the public code's own settings
(``config.baselines``). The baselines replace Ree by one ``LayerNorm + Linear``
head per exit.

How the settings were chosen: not tuned yet. Every method runs the public code's
settings (learning rate 0.05 -> 0.001; DepthFL with FedDyn 0.1 -> 0.01). The sweep
``configs/sweeps/reefl_mnist.py`` chooses each method's learning rate on the 10
validation clients (3 values per method, equal effort), never on the test split;
its ``sweep.md`` lists the ``per_method`` overrides to set here once it has run.

Measured here only as a short run, before validation clients existed (all 100
clients training, as ``--config.data.num_validation_clients=0``;
``--config.fl.rounds=30 --config.fl.kd_rounds=9
--config.eval_every=10``, one seed, the methods split over three processes on a
2-core CPU at load 15-20; 27-36 min each): mean over exits at round 30 of ReeFL
56.3%, ReeFL at full budget 57.3, ExclusiveFL 60.6, InclusiveFL 47.2 (45.7 w/o
momentum distillation), DepthFL 57.3 (55.7 with FedDyn), ScaleFL 38.4. The full
150 rounds x 3 seeds were not run; see README.md (ReeFL baselines).
"""

from configs import reefl_common, reefl_mnist


def get_config(variant: str = 'full'):
  """``full`` or ``quick`` as in ``configs/reefl_mnist.py``."""
  config = reefl_mnist.get_config(variant)
  config.methods = ('reefl',) + reefl_common.BASELINES
  return config
