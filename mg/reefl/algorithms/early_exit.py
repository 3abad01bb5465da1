r"""What the ReeFL paper's baselines share: their local losses and one local-training program.

The baselines of docs/design.md s.13, on the tiers of s.9.

Lee et al., "Recurrent Early Exits for Federated Learning with Heterogeneous
Clients", ICML 2024, compare ReeFL with ExclusiveFL, InclusiveFL (Liu et al.,
KDD 2022), DepthFL (Kim et al., ICLR 2023) and ScaleFL (Ilhan et al., CVPR
2023), all re-implemented in the public code (royson/reefl) on the same ViT
with one ``LayerNorm + Linear`` head per exit (:mod:`mg.models.exit_heads`).
Their clients are the code's ``ReeFLClassificationClient.train`` with another
``kl_loss``; for a tier's stacked exit logits ``(E, B, C)``:

.. math::

  L = \sum_e \mathrm{CE}_e + w\, \mathrm{KD} + L_{dyn}

* ``'none'`` (ExclusiveFL, InclusiveFL): no KD term;
* ``'all'`` (DepthFL): :math:`\mathrm{KD} = \frac{1}{E-1} \sum_i \sum_{j \ne i}
  T^2\,\mathrm{KL}(\mathrm{sg}(p_j) \,\|\, p_i)` with the ramp ``w(r)`` of
  :func:`mg.reefl.algorithms.reefl.kd_weight`, T = 1;
* ``'forward'`` (ScaleFL): :math:`\mathrm{KD} = \sum_{j < E-1} T^2\,
  \mathrm{KL}(\mathrm{sg}(p_{E-1}) \,\|\, p_j)`, constant ``w`` = 0.05, T = 3;
* FedDyn (Acar et al., ICLR 2021; DepthFL's ``depthFL_feddyn``): :math:`L_{dyn} =
  -\langle \theta, g_i \rangle + \frac{\alpha}{2} \|\theta - \theta^t\|^2`
  with the client's state ``g_i`` (``prev_grads``).

No KD term for a single-exit tier. SGD as ReeFL's (clip by value, then the
optimiser's weight decay ``g + wd * theta``; the code's ``torch.optim.SGD``).
The KD mode, its weight, T, alpha and the weight decay are traced, so the
methods on one model (ExclusiveFL, DepthFL, DepthFL + FedDyn) share one
compiled program; where a spec gives ``forward_any`` the tier is traced too
and that program serves every tier (the full-depth model with the blocks
after the tier's exit skipped and the other exits masked; the client uploads
what its tier holds). ScaleFL's tiers differ in width, so it compiles one
program per tier.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from mg.data import masked_mean
from mg.federated import aggregation
from mg.federated import tiers as tiers_lib
from mg.models import exit_heads
from mg.reefl.algorithms import reefl
from mg.reefl.algorithms.reefl import exit_cross_entropies
from mg.models.vit import flatten, stack, unflatten

KD_MODES = ('none', 'all', 'forward')


class LocalConfig(NamedTuple):
  """A baseline client's local training: the mode picks its KD term."""
  batch_size: int = 32
  clip: float = 1.0
  kd_mode: str = 'none'
  temperature: float = 1.0
  weight_decay: float = 0.0
  feddyn_alpha: float = 0.0   # 0: no FedDyn terms


def is_trainable(path: str, regime: str) -> bool:
  """:func:`mg.reefl.algorithms.reefl.is_trainable`, with the exit heads in Ree's place."""
  return reefl.is_trainable(path, regime, exit_module='heads/')


def split(flat: dict, regime: str) -> tuple[dict, dict]:
  """(trainable, frozen) parameters of a flat tree (exit heads in Ree's place)."""
  return reefl.split(flat, regime, exit_module='heads/')


def size(flat: dict) -> int:
  return int(sum(math.prod(v.shape) for v in flat.values()))


# ---------------------------------------------------------------------- loss


def _kl(target_logp, logp, weights):
  """Batch-mean ``KL(exp(target) || exp(logp))`` over the last axis, masked."""
  kl = jnp.sum(jnp.exp(target_logp) * (target_logp - logp), axis=-1)
  return masked_mean(kl, weights)


def _all_exits(logits, valid):
  return reefl.exit_mask(logits.shape[0]) if valid is None else valid


def kd_all(logits: jax.Array, weights, temperature: float, valid=None) -> jax.Array:
  """DepthFL: ``(1/(E-1)) sum_i sum_{j != i} T^2 KL(sg p_j || p_i)``; 0 for one exit.

  ``valid`` (E,) bool: the exits that count (``E`` their number; None: all).
  """
  valid = _all_exits(logits, valid)
  n = jnp.sum(valid)
  logp = jax.nn.log_softmax(logits / temperature, axis=-1)      # (E, B, C)
  target = jax.lax.stop_gradient(logp)
  pair = _kl(target[None, :], logp[:, None], weights)           # [i, j] = KL(p_j || p_i)
  pairs = (1.0 - jnp.eye(logits.shape[0])) * (valid[:, None] & valid[None, :])
  kd = jnp.sum(jnp.where(pairs > 0, pair, 0.0)) / jnp.maximum(n - 1, 1) * temperature ** 2
  return jnp.where(n > 1, kd, 0.0)


def kd_forward(logits: jax.Array, weights, temperature: float, valid=None) -> jax.Array:
  """ScaleFL: ``sum_{j < last} T^2 KL(sg p_last || p_j)`` over the valid exits; 0 for one."""
  valid = _all_exits(logits, valid)
  n = logits.shape[0]
  last = n - 1 - jnp.argmax(valid[::-1])
  logp = jax.nn.log_softmax(logits / temperature, axis=-1)
  target = jax.lax.stop_gradient(logp[last])
  kl = _kl(target[None], logp, weights)                         # (E,)
  return jnp.sum(jnp.where(valid & (jnp.arange(n) != last), kl, 0.0)) * temperature ** 2


def local_loss(logits, labels, weights, mode, kd_w, temperature, valid=None):
  """``(loss, ce)``: summed cross-entropies plus the KD term ``mode`` (traced) selects.

  ``valid`` (E,) bool: the exits of the client's tier (None: all of ``logits``).
  """
  ce = jnp.where(_all_exits(logits, valid), exit_cross_entropies(logits, labels, weights), 0.0)
  kd = jnp.where(mode == KD_MODES.index('all'), kd_all(logits, weights, temperature, valid),
                 jnp.where(mode == KD_MODES.index('forward'),
                           kd_forward(logits, weights, temperature, valid), 0.0))
  return jnp.sum(ce) + kd_w * kd, ce


def feddyn_penalty(trainable: dict, prev: dict, anchor: dict, alpha) -> jax.Array:
  """``-<theta, g_i> + alpha/2 ||theta - theta^t||^2`` summed over parameters."""
  lin = sum(jnp.vdot(trainable[k], prev[k]) for k in trainable)
  quad = sum(jnp.sum(jnp.square(trainable[k] - anchor[k])) for k in trainable)
  return -lin + 0.5 * alpha * quad


def feddyn_client_state(prev: dict, trained: dict, anchor: dict, alpha: float) -> dict:
  """The client's state after training: ``g_i <- g_i - alpha (theta_i - theta^t)``."""
  return {k: prev[k] - alpha * (trained[k] - anchor[k]) for k in prev}


# ------------------------------------------------------------ local training


class Knobs(NamedTuple):
  """The traced per-call settings of :func:`make_local_train`."""
  lr: jax.Array
  kd_w: jax.Array
  mode: jax.Array
  temperature: jax.Array
  weight_decay: jax.Array
  alpha: jax.Array


def knobs(local: LocalConfig, lr: float, kd_w: float) -> Knobs:
  f = jnp.float32
  return Knobs(f(lr), f(kd_w), jnp.int32(KD_MODES.index(local.kd_mode)), f(local.temperature),
               f(local.weight_decay), f(local.feddyn_alpha))


def make_local_train(forward: Callable, exits: Callable, batch_size: int, clip: float,
                     trace_counts: dict | None = None, name=None, batched: bool = False,
                     prev_per_client: bool = False):
  """``train(trainable, frozen, prev, images, labels, index, count, key, knobs, tier)``, jitted.

  ``forward(params, images, tier) -> [logits per exit]``; ``exits(tier)``:
  the (E,) mask of the exits that count, or None for all; ``trainable`` and
  ``frozen`` the parameters by path with the blocks stacked (``tier`` traced:
  the program may serve every tier); ``prev`` the client's FedDyn state (a
  dict like ``trainable``; zeros and ``alpha = 0`` turn FedDyn off). One
  shuffled epoch of batches of ``batch_size``, the last partial batch masked.
  Returns ``(trainable, stats)``, ``stats = {'loss', 'steps'}``.

  ``batched``: vmapped over clients of one tier (``index``, ``count``, ``key``
  and, with ``prev_per_client``, ``prev`` with a leading client axis), for
  :mod:`mg.federated.tiers`' ``vmap`` mapping.
  """
  bsz = batch_size

  def train(trainable, frozen, prev, images, labels, index, count, key, kn: Knobs, tier):
    if trace_counts is not None:
      trace_counts[name] = trace_counts.get(name, 0) + 1
    n_max = index.shape[0]
    order, steps = reefl.epoch_order(key, count, n_max, bsz)
    anchor = trainable
    valid = exits(tier)

    def loss_fn(tr, x, y, w):
      logits = jnp.stack(forward(unflatten({**tr, **frozen}), x, tier))
      loss, _ = local_loss(logits, y, w, kn.mode, kn.kd_w, kn.temperature, valid)
      return loss + feddyn_penalty(tr, prev, anchor, kn.alpha)

    def body(b, carry):
      tr, loss_sum = carry
      pos = b * bsz + jnp.arange(bsz)
      ids = index[order[jnp.minimum(pos, n_max - 1)]]
      w = (pos < count).astype(jnp.float32)
      loss, grads = jax.value_and_grad(loss_fn)(tr, images[ids], labels[ids], w)
      if clip:
        grads = jax.tree.map(lambda g: jnp.clip(g, -clip, clip), grads)
      tr = jax.tree.map(lambda p, g: p - kn.lr * (g + kn.weight_decay * p), tr, grads)
      return tr, loss_sum + loss

    trainable, loss_sum = jax.lax.fori_loop(0, steps, body, (trainable, jnp.zeros(())))
    return trainable, {'loss': loss_sum / jnp.maximum(steps, 1), 'steps': steps}

  if batched:
    axes = (None, None, 0 if prev_per_client else None, None, None, 0, 0, 0, None, None)
    return jax.jit(jax.vmap(train, in_axes=axes))
  return jax.jit(train)


# ---------------------------------------------------------------- algorithm


class Hparams(NamedTuple):
  """The round schedule (ReeFL's): cosine learning rate, KD ramp or constant KD weight."""
  rounds: int
  lr: float = 0.05
  min_lr: float = 0.001
  kd_rounds: float = 300.0
  kd_weight: float | None = None   # a constant KD weight (ScaleFL) instead of the ramp


class Spec(NamedTuple):
  """How one baseline differs from the others; every field a pure function or a constant.

  ``tier_tree(params, extra, tier)``: the tier's parameters at the client (a
  tree; ``extra`` is the method's server extras, None for shapes only);
  ``forward(tier)``: ``(params, images) -> [logits]`` of the tier's local model;
  ``forward_any``: ``(params, images, tier) -> [logits at every exit]`` of the
  full-depth model with ``tier`` traced (one program for every tier), or None;
  ``last_only``: with ``forward_any``, only the tier's own exit counts (else
  every exit up to it);
  ``program_key(tier)``: compiled programs are shared between specs with equal keys;
  ``server(train, extra, batch)`` -> ``(train, extra)``: the server rule, a
  pure (jitted) function of the global trainable parameters (flat, blocks
  stacked), the method's extras and the round's :class:`Uploads`;
  ``client_state``: whether clients keep FedDyn state (``extra['g']``, a row per client).
  """
  tier_tree: Callable
  forward: Callable
  program_key: Callable
  server: Callable
  logits: Callable            # (eval_tree(state), images) -> [logits per exit]
  eval_tree: Callable = lambda state: state.params
  client_state: bool = False
  forward_any: Callable | None = None
  last_only: bool = False


class Uploads(NamedTuple):
  """A round's client outputs stacked over the C sampled clients, on the device.

  ``trees``: ``{path: (C, ...)}`` the trained trainable parameters at the
  global shapes (blocks stacked; a width slice padded with zeros);
  ``held``: ``{path: (C, ...)}`` which entries each client holds
  (:mod:`mg.federated.aggregation`); ``weights`` (C,) example counts;
  ``tiers``, ``cids`` (C,) int32; ``states``: FedDyn's new client states
  (like ``trees``) or None.
  """
  trees: dict
  held: dict
  weights: jax.Array
  tiers: jax.Array
  cids: jax.Array
  states: dict | None = None


def _exit_mask(spec: Spec, num_exits: int) -> Callable:
  """``tier -> (E,) mask`` of the exits a client of ``tier`` trains (None: every exit given)."""
  if spec.forward_any is None:
    return lambda tier: None
  if spec.last_only:
    return lambda tier: jnp.arange(num_exits) == tier
  return lambda tier: reefl.exit_mask(num_exits, tier)


class Shared(NamedTuple):
  """What :func:`algorithm`'s ``broadcast`` sends a tier's clients.

  ``trainable``/``frozen``: the parameters the local program trains and
  reads (blocks stacked; the full model with the tier's own values where the
  spec has ``forward_any``, else the tier's own model); ``g``: FedDyn's
  client states (or None).
  """
  trainable: dict
  frozen: dict
  g: dict | None


def _slice_mask(shape, full) -> np.ndarray:
  """Where a leading-index slice of ``shape`` lies in an array of shape ``full``."""
  mask = np.zeros(full, bool)
  mask[tuple(slice(0, s) for s in shape)] = True
  return mask


def held_table(spec: Spec, params, extra, num_exits: int, regime: str) -> dict:
  """``{path: (E, ...) bool}``: what each tier uploads of the global trainable parameters.

  Rows of stacked blocks and whole tensors (:func:`mg.federated.aggregation.mask_table`)
  where the tiers train the full-width model; entry by entry for width slices (ScaleFL).
  """
  train = split(traverse_util.flatten_dict(params, sep='/'), regime)[0]
  tiers = [split(flatten(jax.eval_shape(lambda p, e, t=t: spec.tier_tree(p, e, t), params, extra)),
                 regime)[0] for t in range(num_exits)]
  if spec.forward_any is not None:
    return aggregation.mask_table([set(t) for t in tiers], train)
  table = {}
  for k, v in train.items():
    rows = []
    for t in tiers:
      own = stack(t)
      rows.append(_slice_mask(own[k].shape, v.shape) if k in own else np.zeros(v.shape, bool))
    table[k] = np.stack(rows)
  return table


@jax.jit
def _client_row(g: dict, cid, table: dict, tier) -> dict:
  """Client ``cid``'s FedDyn state where tier ``tier`` holds the entry, else 0."""
  mask = aggregation.gather_masks(table, tier)
  return {k: jnp.where(aggregation.expand(mask[k], v.ndim - 1), v[cid], 0.0) for k, v in g.items()}


_client_state = jax.jit(feddyn_client_state)


def _pad_to(tree: dict, like: dict) -> dict:
  """``tree``'s leading-index slices placed in zeros of ``like``'s shapes (every path of ``like``)."""
  return {k: (jnp.pad(tree[k], [(0, f - s) for s, f in zip(tree[k].shape, v.shape)])
              if k in tree else jnp.zeros(v.shape, v.dtype)) for k, v in like.items()}


def algorithm(name: str, spec: Spec, *, regime: str, local: LocalConfig,
              hp: Hparams, num_exits: int, extra: Callable = lambda params: {},
              programs: dict | None = None, trace_counts: dict | None = None):
  """A baseline as :class:`mg.federated.mapping.Algorithm` pure functions.

  The server state is :class:`mg.federated.server.ServerState` with the
  method's extra state (InclusiveFL's personal layers and momenta, FedDyn's
  ``h`` and client states) in ``opt_state``. A client's output tree is its
  trained parameters at the global trainable shapes, left on the device; the
  server stacks the round's outputs into :class:`Uploads` and applies the
  spec's rule in one compiled program. ``output(state)`` is what
  ``spec.logits`` reads (InclusiveFL: the global and the personal layers).
  """
  from mg.federated import server as server_lib  # pylint: disable=g-import-not-at-top
  from mg.federated.mapping import Algorithm, ClientOutput  # pylint: disable=g-import-not-at-top
  programs = {} if programs is None else programs
  zeros: dict = {}
  # The tiers' mask table, upload sizes and the trainable shapes; like the
  # programs, kept for every algorithm built from the same spec (specs with
  # equal arguments are one object), so a batched sweep, which builds its
  # members' algorithm every round, computes them once.
  held = programs.setdefault(('held', name, regime, spec), {})

  def init(params):
    return server_lib.init_state(params, opt_state=extra(params))

  def held_of(state):
    if not held:
      shapes = jax.eval_shape(lambda p: p, state.params)
      table = held_table(spec, shapes, jax.eval_shape(lambda e: e, state.opt_state),
                         num_exits, regime)
      train = split(traverse_util.flatten_dict(shapes, sep='/'), regime)[0]
      held.update(table=jax.tree.map(jnp.asarray, table), shapes=train,
                  sizes=aggregation.held_sizes(table, train))
    return held

  def at_client(params, opt_state, tier):
    own = flatten(spec.tier_tree(params, opt_state, tier))
    train, frozen = split(stack({**flatten(params), **own} if spec.forward_any else own), regime)
    return train, frozen

  def broadcast(state, tier):
    held_of(state)
    key = ('broadcast', name, spec.program_key(tier), tier)   # one small program per tier
    if key not in programs:
      programs[key] = jax.jit(functools.partial(at_client, tier=tier))
    train, frozen = programs[key](state.params, state.opt_state)
    dyn = state.opt_state.get('g') if spec.client_state else None
    return Shared(train, frozen, dyn)

  def program(tier, batched=False):
    pkey = spec.program_key(tier)
    key = (pkey, 'batch', spec.client_state) if batched else pkey  # prev: per client or shared
    if key not in programs:
      forward = spec.forward_any or (lambda p, x, t, f=spec.forward(tier): f(p, x))
      programs[key] = make_local_train(forward, _exit_mask(spec, num_exits),
                                       local.batch_size, local.clip, trace_counts, key,
                                       batched=batched, prev_per_client=spec.client_state)
    return pkey, programs[key]

  def prev_of(shared: Shared, pkey, cid, tier):
    """The FedDyn state the client trains with (zeros without FedDyn)."""
    if spec.client_state:  # the client's own row, where its tier holds the entry (else 0)
      prev = _client_row(shared.g, cid, held['table'], tier)
      return exit_heads.slice_to(prev, {k: v.shape for k, v in shared.trainable.items()})
    if pkey not in zeros:
      zeros[pkey] = {k: jnp.zeros_like(v) for k, v in shared.trainable.items()}
    return zeros[pkey]

  def settings(round_):
    lr = reefl.learning_rate(round_, hp.rounds, hp.lr, hp.min_lr)
    kd_w = (reefl.kd_weight(round_, hp.kd_rounds) if hp.kd_weight is None else hp.kd_weight)
    return knobs(local, lr, kd_w)

  def output_of(shared: Shared, data, trained, stats, prev):
    metrics = dict(stats, tier=data.tier, cid=data.cid)
    if spec.client_state:
      metrics['state'] = _client_state(prev, trained, shared.trainable,
                                       jnp.float32(local.feddyn_alpha))
    if spec.forward_any is None:  # the tier's own shapes: placed in the global ones
      trained = _pad_to(trained, held['shapes'])
      if spec.client_state:
        metrics['state'] = _pad_to(metrics['state'], held['shapes'])
    return ClientOutput(trained, data.count, metrics)

  def client(shared: Shared, data, images, labels, key, round_):
    pkey, train_fn = program(data.tier)
    prev = prev_of(shared, pkey, data.cid, data.tier)
    trained, stats = train_fn(shared.trainable, shared.frozen, prev, images, labels,
                              data.index, data.count, key, settings(round_),
                              jnp.int32(data.tier))
    return output_of(shared, data, trained, stats, prev)

  def client_batch(shared: Shared, data: list, images, labels, keys, round_):
    tier = data[0].tier
    pkey, train_fn = program(tier, batched=True)
    prevs = [prev_of(shared, pkey, d.cid, tier) for d in data]
    prev = aggregation.stack_clients(prevs) if spec.client_state else prevs[0]
    group = tiers_lib.stack_data(data)
    out = train_fn(shared.trainable, shared.frozen, prev, images, labels, group.index,
                   group.count, keys, settings(round_), jnp.int32(tier))
    return [output_of(shared, d, trained, stats, p)
            for (trained, stats), d, p in zip(tiers_lib.split_rows(out, len(data)), data, prevs)]

  def server_rule(params, opt_state, trees, states, weights, tiers, cids, table):
    flat = traverse_util.flatten_dict(params, sep='/')
    train = split(flat, regime)[0]
    batch = Uploads(aggregation.stack_clients(trees), aggregation.gather_masks(table, tiers),
                    weights, tiers, cids,
                    aggregation.stack_clients(states) if states is not None else None)
    new, ext = spec.server(train, opt_state, batch)
    return (traverse_util.unflatten_dict({**flat, **new}, sep='/'), ext,
            aggregation.all_finite(batch.trees, batch.held))

  def server(state, outputs):
    h = held_of(state)
    states = [o.metrics['state'] for o in outputs] if spec.client_state else None
    key = ('server', name, regime, spec)
    if key not in programs:
      programs[key] = jax.jit(server_rule)
    params, ext, finite = programs[key](
        state.params, state.opt_state, [o.tree for o in outputs], states,
        jnp.stack([jnp.asarray(o.weight, jnp.float32) for o in outputs]),
        jnp.asarray([o.metrics['tier'] for o in outputs], jnp.int32),
        jnp.asarray([o.metrics['cid'] for o in outputs], jnp.int32), h['table'])
    state = state._replace(params=params, opt_state=ext, round=state.round + 1)
    return state, {'finite': finite,
                   'uploaded': sum(h['sizes'][o.metrics['tier']] for o in outputs)}

  def output(state):
    return spec.eval_tree(state)

  return Algorithm(name, init, broadcast, client, server, output, client_batch)


def weighted_mean_server(train, extra, batch: Uploads):
  """The code's ``EarlyExitFedAvg``: the example-weighted mean over the clients holding each entry."""
  return aggregation.held_mean(train, batch.trees, batch.weights, batch.held), extra


def tier_counts(tier_tree: Callable, params, extra, num_exits: int, regime: str) -> list[dict]:
  """Per tier: parameters held, trainable (= uploaded each round)."""
  out = []
  for t in range(num_exits):
    flat = flatten(tier_tree(params, extra, t))
    train = split(flat, regime)[0]
    out.append({'tier': t, 'held': size(flat), 'trainable': size(train), 'uploaded': size(train)})
  return out
