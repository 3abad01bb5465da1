"""MetaGater in JAX: federated meta-learning of conditional channel-gated networks.

Subpackages (import what you use):
  mg.prox, mg.optim   prox operators and optax transforms (reusable anywhere)
  mg.models           pure models with channel gating, subnet masks, MACs
  mg.data             datasets, federated partition, padded task arrays
  mg.federated        local solves, client mapping, one compiled round
  mg.algorithms       MetaGater, FedAvg, Per-FedAvg as init/round pairs
  mg.adapt            two-stage fast adaptation and target evaluation
  mg.report           metrics log, result tables, plots, progress
  mg.run              one experiment end to end
"""
