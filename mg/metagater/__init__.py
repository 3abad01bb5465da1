"""MetaGater (Lin et al., IEEE MASS 2021) and the baselines it is measured against.

  config        the checks of a MetaGater config, before any work
  methods       the compared methods by name, with their own settings
  algorithms/   MetaGater, FedAvg, Per-FedAvg as init/round function sets
  adapt         two-stage fast adaptation at a target, MetaSNIP
  train         one method's rounds, evaluations and divergence guard
  run           one experiment end to end (``python -m experiments.main``)
  sweep/        batched sweeps: one compiled program over a method's members
  torch_reference  the MetaGater round as a plain PyTorch loop (benchmark reference)
  system        what the entry points call (``mg.systems``)
"""
