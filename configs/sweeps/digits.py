r"""The sweep that chooses the step sizes and group-lasso strength of configs/digits.py.

  python -m experiments.sweep --config=configs/digits.py \
      --sweep=configs/sweeps/digits.py --config.meta.rounds=50

Every method's traced hyperparameters on a grid, at two seeds (two data
partitions and PRNG streams): MetaGater's outer step beta against the group
lasso strength rho, then its local step and lambda, and the adaptation step;
FedAvg's local step; Per-FedAvg's inner and outer steps; MetaGater w/o gating's
beta. ``sweep.md`` lists the best configuration of each method (mean target
accuracy over the seeds); ``sweep_<field>.png`` plots accuracy against each
field.

  python -m experiments.sweep --config=configs/digits.py \
      --sweep=configs/sweeps/digits.py:bench --config.meta.rounds=30 --bench

The benchmark sweep: 16 MetaGater configurations (4 beta x 4 rho, seed 0),
batched against 16 sequential single runs.
"""

BETAS = [0.25, 0.5, 1.0, 2.0]
RHOS = [0.0, 0.003, 0.01, 0.03]
SEEDS = [0, 1]


def get_sweep(variant: str = 'defaults'):
  if variant == 'bench':
    return {'method': 'metagater', 'grid': {'meta.beta': BETAS, 'meta.rho': RHOS},
            'seeds': [0]}
  if variant != 'defaults':
    raise ValueError(f"configs/sweeps/digits.py:{variant}: expected 'defaults' or 'bench'")
  return [
      {'method': 'metagater', 'grid': {'meta.beta': BETAS, 'meta.rho': RHOS},
       'seeds': SEEDS},
      {'method': 'metagater', 'grid': {'meta.local_lr': [0.02, 0.1, 0.2],
                                       'meta.lam': [0.5, 2.0]}, 'seeds': SEEDS},
      {'method': 'metagater', 'grid': {'adapt.lr': [0.02, 0.1, 0.2]}, 'seeds': SEEDS},
      {'method': 'metagater_nogate', 'grid': {'meta.beta': BETAS}, 'seeds': SEEDS},
      {'method': 'fedavg', 'grid': {'meta.local_lr': [0.01, 0.02, 0.05, 0.1, 0.2]},
       'seeds': SEEDS},
      {'method': 'perfedavg_fo', 'grid': {'perfedavg.alpha': [0.01, 0.05, 0.1],
                                          'perfedavg.beta': [0.02, 0.05, 0.1]},
       'seeds': SEEDS},
  ]
