r"""The sweep that chooses every method's settings in configs/cifar10.py (CNN-4).

  python -m experiments.sweep --config=configs/cifar10.py:quick \
      --config.data.dir=DIR --sweep=configs/sweeps/cifar10.py --workdir=runs/sweep-cifar10

Equal tuning effort: every trained method gets 4 configurations (a 2 x 2
grid over two of its own hyperparameters, ``per_method.<method>.*``) at one
seed, each chosen on the *validation* tasks' accuracy, never on the targets.
Sized for a CPU: on an accelerator widen the grids (the same count for every
method) and add seeds.
"""

SEEDS = [0]


def grid(method, **values):
  return {'method': method, 'seeds': SEEDS,
          'grid': {f'per_method.{method}.{k}': v for k, v in values.items()}}


def get_sweep():
  # Ranges: the larger step sizes of configs/sweeps/mnist.py (one local step a
  # round and few rounds favour large steps) and MetaGater's rho where MNIST's
  # validation chose it (0.03-0.1; at 0.003-0.01 no channel is ever switched off).
  return [
      grid('fedavg', local_lr=[0.05, 0.1], adapt_lr=[0.05, 0.1]),
      grid('perfedavg_fo', alpha=[0.01, 0.03], beta=[0.05, 0.1]),
      grid('perfedavg_hf', alpha=[0.003, 0.01], beta=[0.05, 0.1]),
      grid('metagater_nogate', beta=[1.0, 2.0], adapt_lr=[0.05, 0.1]),
      grid('metagater', beta=[1.0, 2.0], rho=[0.03, 0.1]),
      grid('metagater_unaccelerated', beta=[1.0, 2.0], rho=[0.03, 0.1]),
  ]
