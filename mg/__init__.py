"""mg: MetaGater and ReeFL in JAX, on one federated core.

The core (imported with ``import mg``: the transforms reusable anywhere):
  mg.prox, mg.optim   prox operators and optax transforms (``proximal``, ``accelerate``)

The rest (import what you use):
  mg.models           MetaGater's gated MLP/CNNs; ReeFL's ViT, Ree and exit heads
  mg.data             datasets, federated tasks and Dirichlet clients
  mg.federated        local solves, client mapping, sharding, one compiled round
  mg.harness          one run per workdir: lock, config of record, checkpoints, resume
  mg.report           metrics log, result tables, plots, progress
  mg.sweep            sweep files and ranking on validation
  mg.systems          ``config.system`` -> its package
  mg.metagater        MetaGater and its baselines: algorithms, adaptation, the run
  mg.reefl            ReeFL and its baselines: algorithms, the run, pretraining
"""

from mg import optim
from mg import prox

__all__ = ['optim', 'prox']
