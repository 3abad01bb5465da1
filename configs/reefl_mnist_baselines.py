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

Expected: see README.md (ReeFL baselines) for the measured table and time.
"""

from configs import reefl_common, reefl_mnist


def get_config():
  config = reefl_mnist.get_config()
  config.methods = ('reefl',) + reefl_common.BASELINES
  return config
