"""The ReeFL paper's baselines by method name (Lee et al., ICML 2024, Table 1; docs/design.md s.13).

``exclusivefl`` (:mod:`mg.reefl.algorithms.exclusivefl`), ``inclusivefl`` and
``inclusivefl_nomd`` (:mod:`mg.reefl.algorithms.inclusivefl`), ``depthfl`` and
``depthfl_feddyn`` (:mod:`mg.reefl.algorithms.depthfl`), ``scalefl``
(:mod:`mg.reefl.algorithms.scalefl`), all on :mod:`mg.models.exit_heads`; and
``reefl_maximum``, ReeFL with every client at the full budget (the code's
``app.args.mode: maximum``; the upper bound), which the ReeFL loop runs itself
with :func:`client_tiers`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mg.reefl.algorithms import depthfl, early_exit, exclusivefl, inclusivefl, reefl, scalefl
from mg.models import vit

HEAD_METHODS = ('exclusivefl', 'inclusivefl', 'inclusivefl_nomd', 'depthfl', 'depthfl_feddyn',
                'scalefl')
METHODS = HEAD_METHODS + ('reefl_maximum',)


class Options(NamedTuple):
  """The baselines' own settings; defaults are the public code's."""
  inclusivefl_beta: float = 0.2          # InclusiveFL's momentum weight
  feddyn_alpha: float = 0.1              # depthFL_feddyn.yaml
  feddyn_lr: float = 0.1                 # depthFL_feddyn.yaml: start_lr 0.1, min_lr 0.01,
  feddyn_min_lr: float = 0.01            # weight decay 1e-3 (the others: 0.05, 0.001, 0)
  feddyn_weight_decay: float = 1e-3
  scalefl_widths: tuple = ()             # (): the code's list for the number of exits
  scalefl_kd_weight: float = 0.05        # scaleFL.yaml: kl_weight, kl_softmax_temp
  scalefl_temperature: float = 3.0


def client_tiers(method: str, tiers, num_exits: int) -> list[int]:
  """Each client's tier under ``method``: all the last for ``reefl_maximum``."""
  if method == 'reefl_maximum':
    return [num_exits - 1] * len(tiers)
  return list(tiers)


def sample_clients(method: str, seed: int, round_: int, tiers, per_round: int) -> np.ndarray:
  """A round's clients: ExclusiveFL among the full-budget ones, the others among all."""
  if method == 'exclusivefl':
    return exclusivefl.sample_clients(seed, round_, tiers, per_round)
  return reefl.sample_clients(seed, round_, len(tiers), per_round)


def build(method: str, cfg: vit.ViTConfig, *, regime: str, batch_size: int,
          clip: float, hp: early_exit.Hparams, options: Options, num_clients: int,
          programs: dict | None = None, trace_counts: dict | None = None):
  """``(algorithm, spec)`` of a head-based baseline (``HEAD_METHODS``)."""
  local = early_exit.LocalConfig(batch_size=batch_size, clip=clip)
  extra = lambda params: {}
  if method in ('exclusivefl', 'depthfl'):
    spec = exclusivefl.spec(cfg, regime)
    if method == 'depthfl':
      local = local._replace(kd_mode='all')
  elif method == 'depthfl_feddyn':
    spec = depthfl.feddyn_spec(cfg, regime, num_clients, options.feddyn_alpha)
    local = local._replace(kd_mode='all', feddyn_alpha=options.feddyn_alpha,
                           weight_decay=options.feddyn_weight_decay)
    hp = hp._replace(lr=options.feddyn_lr, min_lr=options.feddyn_min_lr)
    extra = lambda params: depthfl.feddyn_extra(params, regime, num_clients)
  elif method == 'inclusivefl':
    spec = inclusivefl.spec(cfg, regime, options.inclusivefl_beta)
    extra = lambda params: inclusivefl.init_extra(cfg, params, regime)
  elif method == 'inclusivefl_nomd':
    spec = inclusivefl.nomd_spec(cfg, regime)
  elif method == 'scalefl':
    widths = tuple(options.scalefl_widths) or scalefl.default_widths(cfg.num_exits)
    spec = scalefl.spec(cfg, regime, widths)
    local = local._replace(kd_mode='forward', temperature=options.scalefl_temperature)
    hp = hp._replace(kd_weight=options.scalefl_kd_weight)
  else:
    raise ValueError(f'method {method!r}: expected one of {HEAD_METHODS}')
  alg = early_exit.algorithm(method, spec, regime=regime, local=local, hp=hp,
                             num_exits=cfg.num_exits, extra=extra, programs=programs,
                             trace_counts=trace_counts)
  return alg, spec
