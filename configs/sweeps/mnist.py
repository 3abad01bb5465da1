r"""Step sizes and group-lasso strength for configs/mnist.py (MLP 784-100-C, paper s.5).

  python -m experiments.sweep --config=configs/mnist.py \
      --config.data.dir=../shared/data/mnist --sweep=configs/sweeps/mnist.py

MetaGater: outer step beta against group-lasso strength rho (the gated hidden
layer's 100 channels), then local step against lambda; FedAvg: local step;
Per-FedAvg (FO and HF): inner step alpha against outer step beta; the
adaptation step of every method. Three seeds (partitions of the test set).
With ``configs/mnist.py:paper`` the same grid covers the paper's partition.
"""

SEEDS = [0, 1, 2]


def get_sweep():
  return [
      {'method': 'metagater', 'grid': {'meta.beta': [0.5, 1.0, 2.0, 4.0],
                                       'meta.rho': [0.0, 0.001, 0.003, 0.01, 0.03]},
       'seeds': SEEDS},
      {'method': 'metagater', 'grid': {'meta.local_lr': [0.02, 0.05, 0.1],
                                       'meta.lam': [0.3, 1.0, 3.0]}, 'seeds': SEEDS},
      {'method': 'fedavg', 'grid': {'meta.local_lr': [0.01, 0.03, 0.05, 0.1, 0.3]},
       'seeds': SEEDS},
      {'method': ['perfedavg_fo', 'perfedavg_hf'],
       'grid': {'perfedavg.alpha': [0.01, 0.03, 0.1], 'perfedavg.beta': [0.02, 0.05, 0.1]},
       'seeds': SEEDS},
      {'method': ['fedavg', 'metagater_nogate', 'metagater'],
       'grid': {'adapt.lr': [0.01, 0.03, 0.1, 0.3]}, 'seeds': SEEDS},
  ]
