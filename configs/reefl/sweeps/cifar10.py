r"""The sweep that chooses each method's learning rate in configs/reefl/cifar10.py.

  python -m experiments.sweep --config=configs/reefl/cifar10.py \
      --config.data.dir=DIR \
      --config.methods='("reefl","reefl_maximum","exclusivefl","inclusivefl","inclusivefl_nomd","depthfl","depthfl_feddyn","scalefl")' \
      --sweep=configs/reefl/sweeps/cifar10.py --workdir=runs/sweep-reefl-cifar10

The grids of ``configs/reefl/sweeps/mnist.py`` (3 starting learning rates per
method around its default, one seed, chosen on the validation clients' mean
accuracy over exits, never on the test split), on CIFAR-10; its variants too
(``:ablations``, methods joined by ``+``).

Run here at the ``:quick`` budget (``--config=configs/reefl/cifar10.py:quick
--config.eval_every=30``: 30 rounds), comparison and ablations together (33
members) split over two processes by method variants
(``:reefl+reefl_maximum+inclusivefl+depthfl_feddyn+reefl_lastkd+reefl_nomod`` and
``:exclusivefl+inclusivefl_nomd+depthfl+scalefl+reefl_nokd``): 45 min 52 s and 36
min 27 s of sweep time on a 2-core CPU, both at once. The chosen values are
``configs/reefl/cifar10.py``'s ``PER_METHOD_LR``. 10 of the 11 methods chose an end
of their grid; a method's three validation accuracies differ by 0.3-2.3 points (the
two InclusiveFL variants most, both rising with the rate), against a standard error
of about 0.65 points for a 5,000-image mean, so most choices are within noise
(docs/reefl_results.md). The full config's 300-round members were not run.
"""

from configs.reefl.sweeps import mnist as reefl_mnist


def get_sweep(variant: str = 'comparison'):
  return reefl_mnist.get_sweep(variant)
