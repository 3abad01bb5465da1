r"""Step sizes and group-lasso strength for configs/cifar10.py (CNN-4, paper s.5).

  python -m experiments.sweep --config=configs/cifar10.py \
      --sweep=configs/sweeps/cifar10.py --config.meta.rounds=100

The paper's CIFAR-10 setup (20 of 20 meta-training tasks per round, one local
update, group lasso on the gate at conv3): MetaGater's outer step beta against
rho, and its local step against lambda; FedAvg's local step; Per-FedAvg's
steps; the adaptation step. Sized for an accelerator: 60+ configurations at
two seeds share one program per method.
"""

SEEDS = [0, 1]


def get_sweep():
  return [
      {'method': 'metagater', 'grid': {'meta.beta': [0.5, 1.0, 2.0, 4.0],
                                       'meta.rho': [0.0, 0.001, 0.003, 0.01, 0.03]},
       'seeds': SEEDS},
      {'method': 'metagater', 'grid': {'meta.local_lr': [0.01, 0.03, 0.05, 0.1],
                                       'meta.lam': [0.3, 1.0, 3.0]}, 'seeds': SEEDS},
      {'method': ['metagater_nogate', 'fedavg'],
       'grid': {'meta.local_lr': [0.01, 0.03, 0.05, 0.1]}, 'seeds': SEEDS},
      {'method': 'perfedavg_fo',
       'grid': {'perfedavg.alpha': [0.01, 0.03, 0.1], 'perfedavg.beta': [0.02, 0.05, 0.1]},
       'seeds': SEEDS},
      {'method': ['fedavg', 'metagater'], 'grid': {'adapt.lr': [0.01, 0.03, 0.1, 0.3]},
       'seeds': SEEDS},
  ]
