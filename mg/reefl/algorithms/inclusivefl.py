r"""InclusiveFL: per-tier top layers and momentum distillation of their updates.

Liu, Zeng, Chen, Cui, Ji, Wang. "No One Left Behind: Inclusive Federated
Learning over Heterogeneous Devices", KDD 2022; as re-implemented in the ReeFL
code (royson/reefl, ``src/server/strategies/inclusivefl.py``,
``src/apps/inclusivefl_classification_app.py``,
``configs/reeFL/accumulator/inclusiveFL.yaml``), which this module follows.

**Client** of tier ``t``: the blocks up to its exit and *only its own* exit
head (``last_exit_only``), trained on that exit's cross-entropy.

**Layers.** With ``b = D / E`` blocks per exit, tier ``t < E-1`` keeps its
top block ``exits[t]`` and its head on the server as *personal* layers; the
last tier keeps its top ``b`` blocks and its head. Everything else it holds
(patch embedding, CLS, positions, lower blocks) is *shared*.

**Server** (:func:`aggregate`), tiers in increasing order:

1. ``theta_t`` = the example-weighted mean of tier ``t``'s clients; its update
   ``g = theta_start - theta_t``;
2. momentum distillation, for ``t < E-1`` on its personal top block, layer by
   layer: :math:`g \leftarrow \beta\, m_{t+1} + (1 - \beta)\, g` with
   ``beta = 0.2`` and ``m_{t+1}`` tier ``t+1``'s momentum (from the previous
   round: tiers are visited in increasing order; zero when ``t+1`` was not
   sampled); the tier's result is ``theta_start - g``;
3. personal layers take the tier's result; each shared layer becomes the mean
   over tiers of their results weighted by their numbers of sampled clients;
4. tier ``t > 0`` stores its momentum ``m_t`` = the mean of ``g`` over its
   top ``b`` blocks (``blocks t b .. exits[t]``), layer by layer; the momenta
   of unsampled tiers are reset to zero.

**Evaluation**: exit ``e`` is tier ``e``'s model (shared layers + its
personal layers), its own exit.

``inclusivefl_nomd`` is the code's ``inclusiveFL_nodis_fedavg.yaml``: the same
last-exit-only clients under the plain ``EarlyExitFedAvg`` server (no personal
layers, no momentum), evaluated as one global model.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from mg.reefl.algorithms import early_exit
from mg.models import exit_heads, vit
from mg.models.vit import flatten, unflatten


def personal_blocks(cfg: vit.ViTConfig, tier: int) -> list[int]:
  """Blocks tier ``tier`` keeps on the server: its top block, the last tier its top ``D/E``."""
  per = cfg.depth // cfg.num_exits
  if tier == cfg.num_exits - 1:
    return list(range(cfg.depth - per, cfg.depth))
  return [cfg.exits[tier]]


def momentum_blocks(cfg: vit.ViTConfig, tier: int) -> list[int]:
  """Blocks whose updates make tier ``tier``'s momentum: ``tier * D/E .. exits[tier]``; none for 0."""
  if tier == 0:
    return []
  per = cfg.depth // cfg.num_exits
  return list(range(tier * per, cfg.exits[tier] + 1))


def _local(params, cfg, tier):
  return exit_heads.tier_params(params, tier, cfg, last_only=True)


def personal_paths(cfg: vit.ViTConfig, params, tier: int, regime: str) -> list[str]:
  """Trainable paths of tier ``tier``'s personal layers (its top block(s) and its head)."""
  blocks = personal_blocks(cfg, tier)
  train = early_exit.split(flatten(_local(params, cfg, tier)), regime)[0]
  return [k for k in train
          if k.startswith(f'heads/{tier}/')
          or (k.startswith('blocks/') and int(k.split('/')[1]) in blocks)]


def init_extra(cfg: vit.ViTConfig, params, regime: str) -> dict:
  """Personal layers (the global values at first) and zero momenta, per tier."""
  flat = flatten(params)
  personal = [{k: jnp.asarray(flat[k]) for k in personal_paths(cfg, params, t, regime)}
              for t in range(cfg.num_exits)]
  momentum = []
  for t in range(cfg.num_exits):
    layers = {}
    for b in momentum_blocks(cfg, t):
      block = {k: v for k, v in flat.items() if k.startswith(f'blocks/{b}/')}
      for k, v in early_exit.split(block, regime)[0].items():
        layers[k.split('/', 2)[2]] = jnp.zeros_like(v)
    momentum.append(layers)
  return {'personal': personal, 'momentum': momentum}


def _weighted_mean(uploads):
  total = sum(w for _, w in uploads)
  return {k: sum(w * np.asarray(f[k], np.float64) for f, w in uploads) / total
          for k in uploads[0][0]}


def aggregate(global_flat: dict, personal: list, momentum: list, groups: dict,
              cfg: vit.ViTConfig, beta: float = 0.2) -> tuple[dict, list, list]:
  """One InclusiveFL server step (the module docstring), in float64 on the host.

  Args:
    global_flat: ``{path: array}`` the global (shared) parameters.
    personal: per tier ``{path: array}``, its personal layers.
    momentum: per tier ``{layer: array}`` (``layer`` a path inside a block).
    groups: ``{tier: [(flat trainable parameters of a client, example count)]}``.
    beta: the momentum weight.

  Returns:
    (new global parameters, new personal layers, new momenta).
  """
  acc, count = {}, {}
  personal = [dict(p) for p in personal]
  momentum = [dict(m) for m in momentum]
  last = cfg.num_exits - 1
  for t in sorted(groups):
    mean = _weighted_mean(groups[t])
    start = {k: np.asarray(personal[t].get(k, global_flat[k]), np.float64) for k in mean}
    grad = {k: start[k] - mean[k] for k in mean}
    if t != last:
      for k in personal[t]:
        if k.startswith('blocks/'):
          grad[k] = beta * np.asarray(momentum[t + 1][k.split('/', 2)[2]]) + (1 - beta) * grad[k]
    result = {k: start[k] - grad[k] for k in mean}
    n = len(groups[t])
    for k, v in result.items():
      if k in personal[t]:
        personal[t][k] = np.asarray(v, np.float32)
      else:
        acc[k] = acc.get(k, 0.0) + n * v
        count[k] = count.get(k, 0) + n
    blocks = momentum_blocks(cfg, t)
    for layer in momentum[t]:
      momentum[t][layer] = np.asarray(
          sum(grad[f'blocks/{b}/{layer}'] for b in blocks) / len(blocks), np.float32)
  for t in range(cfg.num_exits):
    if t not in groups:
      momentum[t] = {k: np.zeros_like(v) for k, v in momentum[t].items()}
  new = {k: (np.asarray(acc[k] / count[k], np.float32) if k in count else v)
         for k, v in global_flat.items()}
  return new, personal, momentum


def _tier_tree(params, extra, tier, cfg):
  tree = _local(params, cfg, tier)
  if extra is None:
    return tree
  return unflatten({**flatten(tree), **extra['personal'][tier]})


def _logits(tree, images, cfg):
  params, personal = tree
  return [exit_heads.apply(_tier_tree(params, {'personal': personal}, e, cfg), images, cfg,
                           tier=e, last_only=True)[0] for e in range(cfg.num_exits)]


def spec(cfg: vit.ViTConfig, regime: str, beta: float = 0.2) -> early_exit.Spec:
  """InclusiveFL with momentum distillation (``beta``; 0 keeps the personal layers only)."""

  def server(state, uploads, outputs):
    groups: dict = {}
    for (flat, w), o in zip(uploads, outputs):
      groups.setdefault(o.metrics['tier'], []).append((flat, w))
    flat = flatten(state.params)
    train = early_exit.split(flat, regime)[0]
    new, personal, momentum = aggregate(train, state.opt_state['personal'],
                                        state.opt_state['momentum'], groups, cfg, beta)
    as_j = lambda d: {k: jnp.asarray(v) for k, v in d.items()}
    extra = {'personal': [as_j(p) for p in personal], 'momentum': [as_j(m) for m in momentum]}
    return unflatten({**flat, **new}), extra

  return early_exit.Spec(
      tier_tree=functools.partial(_tier_tree, cfg=cfg),
      forward=lambda tier: functools.partial(exit_heads.apply, cfg=cfg, tier=tier, last_only=True),
      forward_any=lambda params, images, tier: exit_heads.apply_to_tier(params, images, cfg, tier),
      last_only=True,
      program_key=lambda tier: ('exit_heads_last', regime, cfg),
      server=server,
      logits=functools.partial(_logits, cfg=cfg),
      eval_tree=lambda state: (state.params, state.opt_state['personal']))


def nomd_spec(cfg: vit.ViTConfig, regime: str) -> early_exit.Spec:
  """``inclusiveFL_nodis_fedavg``: last-exit-only clients, the example-weighted mean, one model."""
  return early_exit.Spec(
      tier_tree=lambda params, extra, tier: _local(params, cfg, tier),
      forward=lambda tier: functools.partial(exit_heads.apply, cfg=cfg, tier=tier, last_only=True),
      forward_any=lambda params, images, tier: exit_heads.apply_to_tier(params, images, cfg, tier),
      last_only=True,
      program_key=lambda tier: ('exit_heads_last', regime, cfg),
      server=early_exit.weighted_mean_server(regime),
      logits=lambda params, images: exit_heads.apply(params, images, cfg))
