r"""The sweep that chooses each method's learning rate in configs/reefl_cifar10.py.

  python -m experiments.sweep --config=configs/reefl_cifar10.py \
      --config.data.dir=/work/data/cifar10 \
      --config.methods='("reefl","reefl_maximum","exclusivefl","inclusivefl","inclusivefl_nomd","depthfl","depthfl_feddyn","scalefl")' \
      --sweep=configs/sweeps/reefl_cifar10.py --workdir=runs/sweep-reefl-cifar10

The grids of ``configs/sweeps/reefl_mnist.py`` (3 starting learning rates per
method around its default, one seed, chosen on the validation clients' mean
accuracy over exits, never on the test split), on CIFAR-10. Not run here: one
member is one 300-round run (see configs/reefl_cifar10.py for its cost).
"""

from configs.sweeps import reefl_mnist


def get_sweep(variant: str = 'comparison'):
  return reefl_mnist.get_sweep(variant)
