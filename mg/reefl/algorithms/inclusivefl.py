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

import jax
import jax.numpy as jnp
import numpy as np

from mg.federated import aggregation
from mg.federated import compensated as cf
from mg.reefl.algorithms import early_exit
from mg.models import exit_heads, vit
from mg.models.vit import flatten, stack, unflatten, unstack


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


def holds(path: str, tier: int, cfg: vit.ViTConfig) -> bool:
  """Whether tier ``tier``'s clients hold ``path`` (per block): :func:`_local` by path."""
  parts = path.split('/')
  if parts[0] == 'blocks':
    return int(parts[1]) <= cfg.exits[tier]
  if parts[0] == 'heads':
    return parts[1] == str(tier)
  return True


def _segments(flat: dict) -> dict:
  """``{path: (start, stop, shape)}`` of each entry in the raveled vector of ``flat``."""
  out, start = {}, 0
  for k, v in flat.items():
    size = int(np.prod(v.shape))
    out[k] = (start, start + size, tuple(v.shape))
    start += size
  return out


def _ravel(values: dict, like: dict, fill=None) -> jax.Array:
  """One vector of ``like``'s layout: ``values[k]`` where given, else ``fill[k]`` (or zeros)."""
  return aggregation.ravel({k: values[k] if k in values else
                            fill[k] if fill is not None else jnp.zeros(v.shape, jnp.float32)
                            for k, v in like.items()}, like)


def _momentum(old: dict, g_hi, g_lo, seg: dict, blocks: list, present) -> dict:
  """A tier's new momenta: per layer, the mean of ``g`` over its momentum ``blocks`` (0 if absent)."""
  if not old:
    return {}
  index = np.stack([np.concatenate([np.arange(*seg[f'blocks/{i}/{layer}'][:2]) for layer in old])
                    for i in blocks])                                     # (blocks, M)

  def mean(*rows):
    total = cf.DF(rows[0], rows[len(blocks)])
    for i in range(1, len(blocks)):
      total = cf.add(total, cf.DF(rows[i], rows[len(blocks) + i]))
    return jnp.where(present, cf.div(total, cf.of(float(len(blocks)))).value(), 0.0)

  m = cf.elementwise(mean, *[g_hi[r] for r in index], *[g_lo[r] for r in index])
  return aggregation.unravel(m, old)


def aggregate(global_flat: dict, personal: list, momentum: list, uploads: dict, weights,
              tiers, cfg: vit.ViTConfig, beta: float = 0.2) -> tuple[dict, list, list]:
  """One InclusiveFL server step (the module docstring), on the device.

  Args:
    global_flat: ``{path: array}`` the global (shared) trainable parameters, per block.
    personal: per tier ``{path: array}``, its personal layers.
    momentum: per tier ``{layer: array}`` (``layer`` a path inside a block).
    uploads: ``{path: (C, ...)}`` the clients' trained parameters (all of them,
      entries their tier does not hold are ignored), in an order whose entries,
      raveled and concatenated, follow ``global_flat``'s: per block, or with the
      blocks stacked (``unstack`` keeps that order).
    weights: (C,) example counts; tiers: (C,) int32.
    beta: the momentum weight.

  Returns:
    (new global parameters, new personal layers, new momenta). Every entry of
    every path is one element of a vector, each tier one pass over it; sums
    are compensated (:mod:`mg.federated.compensated`): the code's float64 to
    within a float32 rounding.
  """
  seg = _segments(global_flat)
  theta = aggregation.ravel(global_flat, global_flat)
  x = aggregation.ravel_clients(list(uploads.values()))
  if x.shape[1] != theta.shape[0]:
    raise ValueError(f'uploads hold {x.shape[1]} entries per client, the parameters {theta.size}')
  weights = jnp.asarray(weights, jnp.float32)
  last = cfg.num_exits - 1
  acc = (jnp.zeros_like(theta),) * 2
  count = jnp.zeros_like(theta)
  new_personal, new_momentum = [], []
  for t in range(cfg.num_exits):
    member = tiers == t
    n = jnp.sum(member.astype(jnp.float32))
    present = n > 0
    w = jnp.where(member, weights, 0.0)
    num = cf.dot(w[:, None], jnp.where(member[:, None], x, 0.0))
    total = cf.where(present, cf.dot(jnp.ones_like(w), w), cf.of(1.0))
    moving = ({k: momentum[t + 1][k.split('/', 2)[2]] for k in personal[t]
               if k.startswith('blocks/')} if t != last else {})
    shared = np.zeros(theta.shape, bool)   # what the tier holds and shares with others
    for k in seg:
      if holds(k, t, cfg) and k not in personal[t]:
        shared[seg[k][0]:seg[k][1]] = True

    def rule(nh, nl, start, moved, on, shared, acc_hi, acc_lo, total=total, n=n,
             present=present):
      start = cf.of(start)
      g = cf.sub(start, cf.div(cf.DF(nh, nl), total))
      # Momentum distillation on the personal top block (not the last tier).
      g = cf.where(on > 0, cf.add(cf.mul(cf.of(float(beta)), cf.of(moved)),
                                  cf.mul(cf.of(1.0 - float(beta)), g)), g)
      result = cf.sub(start, g)
      acc = cf.add(cf.DF(acc_hi, acc_lo),
                   cf.where(present & (shared > 0), cf.mul(cf.of(n), result),
                            cf.of(jnp.zeros_like(start.hi))))
      return g.hi, g.lo, result.value(), acc.hi, acc.lo

    on = _ravel({k: jnp.ones(global_flat[k].shape) for k in moving}, global_flat)
    g_hi, g_lo, result, *acc = cf.elementwise(
        rule, *num, _ravel(personal[t], global_flat, fill=global_flat),
        _ravel(moving, global_flat), on, jnp.asarray(shared, jnp.float32), *acc)
    count = count + jnp.where(shared, n, 0.0)
    result = aggregation.unravel(result, global_flat)
    new_personal.append({k: jnp.where(present, result[k], v) for k, v in personal[t].items()})
    new_momentum.append(_momentum(momentum[t], g_hi, g_lo, seg, momentum_blocks(cfg, t), present))

  def final(acc_hi, acc_lo, count, theta):
    return jnp.where(count > 0, cf.div(cf.DF(acc_hi, acc_lo),
                                        cf.of(jnp.where(count > 0, count, 1.0))).value(), theta)

  new = cf.elementwise(final, *acc, count, theta)
  return aggregation.unravel(new, global_flat), new_personal, new_momentum


def _tier_tree(params, extra, tier, cfg):
  tree = _local(params, cfg, tier)
  if extra is None:
    return tree
  return unflatten({**flatten(tree), **extra['personal'][tier]})


def _logits(tree, images, cfg):
  params, personal = tree
  return [exit_heads.apply(_tier_tree(params, {'personal': personal}, e, cfg), images, cfg,
                           tier=e, last_only=True)[0] for e in range(cfg.num_exits)]


@functools.cache  # equal arguments, the same Spec: its programs are shared
def spec(cfg: vit.ViTConfig, regime: str, beta: float = 0.2) -> early_exit.Spec:
  """InclusiveFL with momentum distillation (``beta``; 0 keeps the personal layers only)."""

  def server(train, extra, batch: early_exit.Uploads):
    new, personal, momentum = aggregate(unstack(train), extra['personal'], extra['momentum'],
                                        {k: batch.trees[k] for k in train}, batch.weights,
                                        batch.tiers, cfg, beta)
    return stack(new), {'personal': personal, 'momentum': momentum}

  return early_exit.Spec(
      tier_tree=functools.partial(_tier_tree, cfg=cfg),
      forward=lambda tier: functools.partial(exit_heads.apply, cfg=cfg, tier=tier, last_only=True),
      forward_any=lambda params, images, tier: exit_heads.apply_to_tier(params, images, cfg, tier),
      last_only=True,
      program_key=lambda tier: ('exit_heads_last', regime, cfg),
      server=server,
      logits=functools.partial(_logits, cfg=cfg),
      eval_tree=lambda state: (state.params, state.opt_state['personal']))


@functools.cache  # equal arguments, the same Spec: its programs are shared
def nomd_spec(cfg: vit.ViTConfig, regime: str) -> early_exit.Spec:
  """``inclusiveFL_nodis_fedavg``: last-exit-only clients, the example-weighted mean, one model."""
  return early_exit.Spec(
      tier_tree=lambda params, extra, tier: _local(params, cfg, tier),
      forward=lambda tier: functools.partial(exit_heads.apply, cfg=cfg, tier=tier, last_only=True),
      forward_any=lambda params, images, tier: exit_heads.apply_to_tier(params, images, cfg, tier),
      last_only=True,
      program_key=lambda tier: ('exit_heads_last', regime, cfg),
      server=early_exit.weighted_mean_server,
      logits=lambda params, images: exit_heads.apply(params, images, cfg))
