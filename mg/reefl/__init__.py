"""ReeFL (recurrent early exits for federated learning) and its five baselines.

  config        the checks of a ReeFL config, and the ViT it describes
  methods       the compared methods by name, with their own settings
  algorithms/   ReeFL, the early-exit clients, ExclusiveFL, InclusiveFL, DepthFL
                (+ FedDyn), ScaleFL
  run           one experiment end to end (``python -m experiments.main``)
  sweep         a sweep of its methods, each chosen on validation clients
  report        results.json / results.md and the per-exit figures
  pretrain      a plain ViT backbone for the frozen and LoRA regimes
  system        what the entry points call (``mg.systems``)
"""
