r"""The sweep that chooses every method's settings in configs/mnist.py (MLP 784-100-C).

  python -m experiments.sweep --config=configs/mnist.py \
      --config.data.dir=DIR --sweep=configs/sweeps/mnist.py \
      --config.eval_every=200 --workdir=runs/sweep-mnist

Equal tuning effort: every trained method gets 9 configurations (a 3 x 3 grid
over two of its own hyperparameters, ``per_method.<method>.*``) at one seed
(sized for a shared 2-core CPU; add seeds where there is time), each chosen on
the *validation* tasks' accuracy, never on the targets. ``eval_every`` only
sets the rounds of the target-accuracy curves in ``sweep.json``. MetaGater with alpha_t = 1 is tuned on its own grid;
``sweep.md`` also picks it at MetaGater's sparsity. With
``configs/mnist.py:paper`` the same grid covers the paper's partition.

  python -m experiments.sweep --config=configs/mnist.py \
      --config.data.dir=DIR --sweep=configs/sweeps/mnist.py:eta \
      --config.meta.eta=convex --workdir=runs/sweep-mnist-convex

The same grids of the two methods that the ``eta_t`` policy touches (MetaGater
w/o gating and MetaGater), under another policy: the policy is chosen by
comparing the best validation accuracy of the two sweeps.
"""

SEEDS = [0]


def grid(method, **values):
  return {'method': method, 'seeds': SEEDS,
          'grid': {f'per_method.{method}.{k}': v for k, v in values.items()}}


def get_sweep(variant: str = 'defaults'):
  if variant == 'eta':
    return [
        grid('metagater_nogate', beta=[0.5, 1.0, 2.0], adapt_lr=[0.02, 0.05, 0.1]),
        grid('metagater', beta=[0.5, 1.0, 2.0], rho=[0.01, 0.03, 0.1]),
    ]
  if variant != 'defaults':
    raise ValueError(f"configs/sweeps/mnist.py:{variant}: expected 'defaults' or 'eta'")
  return [
      grid('fedavg', local_lr=[0.02, 0.05, 0.1], adapt_lr=[0.02, 0.05, 0.1]),
      grid('perfedavg_fo', alpha=[0.01, 0.03, 0.1], beta=[0.02, 0.05, 0.1]),
      grid('perfedavg_hf', alpha=[0.003, 0.01, 0.03], beta=[0.02, 0.05, 0.1]),
      grid('metagater_nogate', beta=[0.5, 1.0, 2.0], adapt_lr=[0.02, 0.05, 0.1]),
      grid('metagater', beta=[0.5, 1.0, 2.0], rho=[0.01, 0.03, 0.1]),
      grid('metagater_unaccelerated', beta=[0.5, 1.0, 2.0], rho=[0.01, 0.03, 0.1]),
  ]
