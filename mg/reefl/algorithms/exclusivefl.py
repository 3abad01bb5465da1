"""ExclusiveFL: federated early exits trained only by the clients that can run the whole model.

The baseline of Lee et al., "Recurrent Early Exits for Federated Learning with
Heterogeneous Clients", ICML 2024 (Section 5: "ExclusiveFL ... only clients
with the maximum budget participate"). The public code (royson/reefl,
``configs/reeFL/accumulator/exclusiveFL.yaml``) samples with
``BudgetClientManager(max_exit_budget=None)``: only clients whose tier is the
last (``i mod E == E - 1``) are eligible, and ``min(per_round, eligible)`` of
them are drawn each round (:func:`sample_clients`). Each trains the whole
model with a ``LayerNorm + Linear`` head per exit on the CLS token
(:mod:`mg.models.exit_heads`) on the summed cross-entropy of its exits, no
distillation; the server takes the example-weighted mean
(``EarlyExitFedAvg``).
"""

from __future__ import annotations

import functools

import numpy as np

from mg.reefl.algorithms import early_exit
from mg.models import exit_heads, vit


def sample_clients(seed: int, round_: int, tiers, per_round: int) -> np.ndarray:
  """A round's clients, drawn uniformly without replacement among the last tier's."""
  tiers = np.asarray(tiers)
  eligible = np.flatnonzero(tiers == tiers.max())
  rng = np.random.default_rng([seed, round_])
  return np.sort(rng.choice(eligible, size=min(per_round, len(eligible)), replace=False))


@functools.cache  # equal arguments, the same Spec: its programs are shared
def spec(cfg: vit.ViTConfig, regime: str) -> early_exit.Spec:
  """Every exit trained on the whole model (all tiers share one program with DepthFL)."""
  return early_exit.Spec(
      tier_tree=lambda params, extra, tier: exit_heads.tier_params(params, tier, cfg),
      forward=lambda tier: functools.partial(exit_heads.apply, cfg=cfg, tier=tier),
      forward_any=lambda params, images, tier: exit_heads.apply_to_tier(params, images, cfg, tier),
      program_key=lambda tier: ('exit_heads', regime, cfg),
      server=early_exit.weighted_mean_server,
      logits=functools.partial(_logits, cfg=cfg))


def _logits(params, images, cfg):
  return exit_heads.apply(params, images, cfg)
