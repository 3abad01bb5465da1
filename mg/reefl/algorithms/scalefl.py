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

import jax.numpy as jnp

from mg.federated import aggregation
from mg.reefl.algorithms import early_exit
from mg.models import exit_heads, vit


def default_widths(num_exits: int) -> tuple[float, ...]:
  if num_exits not in exit_heads.SCALEFL_WIDTHS:
    raise ValueError(f'ScaleFL has width lists for {sorted(exit_heads.SCALEFL_WIDTHS)} exits, '
                     f'not {num_exits}: set them in the config')
  return exit_heads.SCALEFL_WIDTHS[num_exits]


def count_mean(train: dict, extra, batch: early_exit.Uploads):
  """Entry-wise plain mean over the clients whose slice covers it (``aggregate_scalefl``).

  A count, not example weights: :func:`mg.federated.aggregation.held_mean`
  with unit weights, the masks being the clients' slices.
  """
  ones = jnp.ones_like(batch.weights)
  return aggregation.held_mean(train, batch.trees, ones, batch.held), extra


def _tier_tree(params, extra, tier, cfg, widths):
  del extra
  return exit_heads.sliced_tier(params, tier, cfg, widths[tier])


def _logits(params, images, cfg, widths):
  return [exit_heads.apply(exit_heads.sliced_tier(params, e, cfg, widths[e]), images, cfg,
                           tier=e, last_only=True)[0] for e in range(cfg.num_exits)]


@functools.cache  # equal arguments, the same Spec: its programs are shared
def spec(cfg: vit.ViTConfig, regime: str, widths: Sequence[float]) -> early_exit.Spec:
  widths = tuple(widths)
  if len(widths) != cfg.num_exits:
    raise ValueError(f'{len(widths)} ScaleFL widths for {cfg.num_exits} exits')

  return early_exit.Spec(
      tier_tree=functools.partial(_tier_tree, cfg=cfg, widths=widths),
      forward=lambda tier: functools.partial(exit_heads.apply, cfg=cfg, tier=tier),
      program_key=lambda tier: ('scalefl', regime, cfg, widths, tier),
      server=count_mean,
      logits=functools.partial(_logits, cfg=cfg, widths=widths))
