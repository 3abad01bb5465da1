r"""ScaleFL: clients scaled in depth and width, count-averaged slices, self-distillation.

Ilhan, Su, Liu. "ScaleFL: Resource-Adaptive Federated Learning with
Heterogeneous Clients", CVPR 2023; as re-implemented in the ReeFL code
(royson/reefl, ``src/server/strategies/scalefl_fedavg.py``,
``aggregate_scalefl`` in ``src/server/strategies/utils.py``,
``src/apps/scalefl_classification_app.py``, ``configs/reeFL/accumulator/scaleFL.yaml``
and the README's width lists), which this module follows.

**Tiers.** Tier ``t`` holds the blocks up to its exit and the heads up to it,
all cut to width ``w_t`` (:data:`mg.models.exit_heads.SCALEFL_WIDTHS`: 0.4,
0.55, 0.75, 1.0 for E = 4): token width ``int(d w_t)``, attention width
rounded up to a multiple of the heads, MLP width ``int(int(d w_t) * 4)``;
every tensor is the leading-index slice of the global one
(:func:`mg.models.exit_heads.slice_to`).

**Client**: the summed cross-entropy of its exits plus
:math:`0.05 \sum_{j<t} T^2 \mathrm{KL}(\mathrm{sg}(p_t) \,\|\, p_j)`, T = 3
(``kl_loss='forward'``, a constant weight: no ramp).

**Server** (:func:`count_mean`): each entry of each global tensor becomes the
plain mean over the sampled clients whose slice covers it (a count, not
example weights); entries nobody covers keep their value.

**Evaluation**: exit ``e`` is tier ``e``'s model at width ``w_e``, its own
(last) exit.

The code's 4-exit ScaleFL runs also move the first exit (``blks_to_exit =
[3, 5, 8, 11]`` instead of ``[2, 5, 8, 11]``); here every method keeps the same
exits, so the tiers stay comparable.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from mg.reefl.algorithms import early_exit
from mg.models import exit_heads, vit
from mg.models.vit import flatten, unflatten


def default_widths(num_exits: int) -> tuple[float, ...]:
  if num_exits not in exit_heads.SCALEFL_WIDTHS:
    raise ValueError(f'ScaleFL has width lists for {sorted(exit_heads.SCALEFL_WIDTHS)} exits, '
                     f'not {num_exits}: set them in the config')
  return exit_heads.SCALEFL_WIDTHS[num_exits]


def count_mean(global_flat: dict, uploads: Sequence[dict]) -> dict:
  """Entry-wise plain mean over the uploads' leading-index slices (``aggregate_scalefl``)."""
  out = {}
  for k, v in global_flat.items():
    total = np.zeros(v.shape, np.float64)
    count = np.zeros(v.shape, np.float64)
    for u in uploads:
      if k not in u:
        continue
      x = np.asarray(u[k], np.float64)
      index = tuple(slice(0, s) for s in x.shape)
      total[index] += x
      count[index] += 1
    out[k] = np.where(count > 0, total / np.maximum(count, 1), np.asarray(v, np.float64)
                      ).astype(np.float32)
  return out


def _tier_tree(params, extra, tier, cfg, widths):
  del extra
  return exit_heads.sliced_tier(params, tier, cfg, widths[tier])


def _logits(params, images, cfg, widths):
  return [exit_heads.apply(exit_heads.sliced_tier(params, e, cfg, widths[e]), images, cfg,
                           tier=e, last_only=True)[0] for e in range(cfg.num_exits)]


def spec(cfg: vit.ViTConfig, regime: str, widths: Sequence[float]) -> early_exit.Spec:
  widths = tuple(widths)
  if len(widths) != cfg.num_exits:
    raise ValueError(f'{len(widths)} ScaleFL widths for {cfg.num_exits} exits')

  def server(state, uploads, outputs):
    del outputs
    flat = flatten(state.params)
    new = count_mean(early_exit.split(flat, regime)[0], [u for u, _ in uploads])
    return unflatten({**flat, **new}), state.opt_state

  return early_exit.Spec(
      tier_tree=functools.partial(_tier_tree, cfg=cfg, widths=widths),
      forward=lambda tier: functools.partial(exit_heads.apply, cfg=cfg, tier=tier),
      program_key=lambda tier: ('scalefl', regime, cfg, widths, tier),
      server=server,
      logits=functools.partial(_logits, cfg=cfg, widths=widths))
