r"""ReeFL: federated training of a ViT with recurrent early exits across budget tiers.

The local loss, dynamic teacher and KD ramp of docs/design.md s.10; the
aggregation of s.11; the regimes of s.12.

Lee, Sun, Mascolo, Dudziak, Choi, Lane. "Recurrent Early Exits for Federated
Learning with Heterogeneous Clients", ICML 2024. Every detail follows the public
code (royson/reefl: ``src/apps/clients/reefl_classification_client.py``,
``src/apps/reefl_classification_app.py``,
``src/server/strategies/earlyexit_fedavg.py`` and ``utils.py``):

**Tiers.** Client ``i`` has budget tier ``i mod E`` and trains the truncated
model up to its tier's exit with every exit up to it (``mg.models.vit``).

**Local loss** on a batch, for the tier's exits ``e = 0..t``:

.. math::

  L = \sum_e \mathrm{CE}_e + w(r) \sum_{e \ne \tau} T^2\,
      \mathrm{KL}(\mathrm{sg}(p_\tau) \,\|\, p_e), \qquad
  w(r) = \exp(-5 (1 - \min(r, R_{kd}) / R_{kd})^2)

(``KLDivLoss(batchmean, log_target)`` with T = 1; ``R_kd`` = the code's
``kl_consistency_weight``, 300 of its 1,000 rounds). The teacher ``tau`` is, in
``'dynamic'`` mode (the code's ``dynamic_ma``), the exit with the lowest
exponential moving average of its training cross-entropy, ``a_e <- 0.8 a_e +
0.2 CE_e``, updated with the current batch *before* the choice, started at 0
at each local training call; ``'last'`` takes the tier's last exit (the code's
``forward``); ``'none'`` has no KD term. A single-exit tier has no KD term.

**Local optimisation.** SGD (no momentum, no weight decay) at the round's rate
``max(lr_min, lr_0 (1 + cos(pi r / R)) / 2)`` (the code's
``cosine_decay_with_warmup`` without warm-up; 0.05 -> 0.001), every gradient
clipped by value to [-1, 1], one epoch of shuffled batches of 32 with the last
partial batch kept (masked here, so shapes stay fixed).

**Server.** Each parameter becomes the mean of the sampled clients that hold
it, weighted by their numbers of training examples; a parameter no sampled
client holds keeps its value (``aggregate_inplace_early_exit``; the code sums
in float64; :func:`make_server` sums float32 pairs on the device to the same
accuracy, :mod:`mg.federated.aggregation`).

**Regimes** (which parameters train and travel): ``full`` (the tier's whole
model), ``frozen`` (Ree and its head only; the backbone keeps its initial or
pretrained values) and ``lora`` (Ree plus the LoRA factors of q and v).

One compiled local-training program for every tier: the client's tier,
example count, learning rate, KD weight and key are traced arguments, the
number of local steps a traced loop bound, so rounds never recompile
(``trace_counts``). The program trains the full-depth parameters with the
exits after the tier's masked out and the blocks after its exit skipped
(:func:`mg.models.vit.apply_to_tier`); the client returns the full trained
parameters, left on the device, and the server reads what its tier holds
(:func:`held_table`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mg.data import masked_mean
from mg.federated import aggregation
from mg.federated import server as server_lib
from mg.federated import tiers as tiers_lib
from mg.federated.mapping import Algorithm, ClientOutput
from mg.models import vit
from mg.models.vit import flatten, unflatten  # noqa: F401 (re-export)

REGIMES = ('full', 'frozen', 'lora')
KD_MODES = ('dynamic', 'last', 'none')
# method name -> (teacher mode, CLS-token modulation)
METHODS = {
    'reefl': ('dynamic', True),
    'reefl_lastkd': ('last', True),
    'reefl_nokd': ('none', True),
    'reefl_nomod': ('dynamic', False),
}


class LocalConfig(NamedTuple):
  """A client's local training (the code's defaults)."""
  batch_size: int = 32
  clip: float = 1.0          # clip_grad_value_; 0 turns clipping off
  ema: float = 0.8           # teacher choice: EMA of the exits' cross-entropies
  temperature: float = 1.0
  kd_mode: str = 'dynamic'   # dynamic | last | none


# ------------------------------------------------------------------ schedules


def _traced(*values) -> bool:
  """Whether a schedule's settings are arrays (a batched sweep's members, traced)."""
  return any(isinstance(v, jax.Array) for v in values)


def kd_weight(round_: float, kd_rounds):
  """``w(r) = exp(-5 (1 - clip(r, 0, R_kd) / R_kd)^2)`` (DepthFL's consistency ramp).

  ``kd_rounds`` may be traced (a batched sweep's members): then an array.
  """
  xp = jnp if _traced(kd_rounds) else np
  phase = 1.0 - xp.clip(round_, 0.0, kd_rounds) / kd_rounds
  w = xp.exp(-5.0 * phase * phase)
  return w if xp is jnp else float(w)


def learning_rate(round_: int, rounds: int, base, minimum):
  """The code's cosine decay without warm-up, floored at ``minimum``; rounds from 1.

  ``base`` and ``minimum`` may be traced (a batched sweep's members): then an array.
  """
  lr = 0.5 * base * (1.0 + math.cos(math.pi * round_ / rounds))
  if round_ > rounds:
    lr = 0.0 * base
  return jnp.maximum(minimum, lr) if _traced(base, minimum) else max(minimum, lr)


# ---------------------------------------------------------------- parameters


def is_trainable(path: str, regime: str, exit_module: str = 'ree/') -> bool:
  """Whether a parameter trains (and is uploaded) in a regime.

  ``exit_module``: the path prefix of what reads the exits (Ree here; the
  baselines' per-exit heads), which trains in every regime.
  """
  if regime == 'full':
    return True
  if path.startswith(exit_module):
    return True
  if regime == 'lora':
    return path.rsplit('/', 1)[-1] in ('lora_a', 'lora_b')
  if regime == 'frozen':
    return False
  raise ValueError(f'regime {regime!r}: expected one of {REGIMES}')


def split(flat: dict, regime: str, exit_module: str = 'ree/') -> tuple[dict, dict]:
  """(trainable, frozen) parameters of a flat tree."""
  train = {k: v for k, v in flat.items() if is_trainable(k, regime, exit_module)}
  return train, {k: v for k, v in flat.items() if k not in train}


def tier_trainable_paths(cfg: vit.ViTConfig, tier: int, regime: str, params) -> list[str]:
  """Paths (one per block) a tier holds and trains; ``params`` may be shapes only."""
  return [k for k in flatten(vit.tier_params(params, tier, cfg)) if is_trainable(k, regime)]


def tier_param_counts(cfg: vit.ViTConfig, regime: str, params) -> list[dict]:
  """Per tier: parameters held (run), trainable (= uploaded each round)."""
  out = []
  for t in range(cfg.num_exits):
    flat = flatten(vit.tier_params(params, t, cfg))
    train, _ = split(flat, regime)
    size = lambda d: int(sum(math.prod(v.shape) for v in d.values()))
    out.append({'tier': t, 'exit_block': cfg.exits[t], 'held': size(flat),
                'trainable': size(train), 'uploaded': size(train)})
  return out


# ---------------------------------------------------------------------- loss


def exit_cross_entropies(logits: jax.Array, labels, weights) -> jax.Array:
  """(E,) masked mean cross-entropy per exit of logits (E, B, C)."""
  ce = optax.softmax_cross_entropy_with_integer_labels(
      logits, jnp.broadcast_to(labels, logits.shape[:2]))
  return masked_mean(ce, weights)


def exit_mask(num_exits: int, tier=None) -> jax.Array:
  """(E,) whether each exit belongs to tier ``tier`` (may be traced; None: all do)."""
  if tier is None:
    return jnp.ones((num_exits,), bool)
  return jnp.arange(num_exits) <= tier


def kd_terms(logits: jax.Array, teacher, weights, temperature: float) -> jax.Array:
  """(E,) ``T^2 KL(sg(p_teacher) || p_e)`` per exit (batch mean), 0 at the teacher."""
  logp = jax.nn.log_softmax(logits / temperature, axis=-1)
  target = jax.lax.stop_gradient(logp[teacher])
  kl = jnp.sum(jnp.exp(target) * (target - logp), axis=-1)        # (E, B)
  kl = masked_mean(kl, weights)
  others = jnp.arange(logits.shape[0]) != teacher
  return jnp.where(others, kl, 0.0) * temperature ** 2


def choose_teacher(ema: jax.Array, ce: jax.Array, local: LocalConfig, mode=None, tier=None):
  """(new EMA, teacher index): the EMA is updated with this batch first.

  ``mode`` (traced: an index into ``KD_MODES``) overrides ``local.kd_mode``, so
  methods that differ only in their teacher share one compiled program.
  ``tier`` (may be traced; None: the last exit's): the teacher is one of its exits.
  """
  ema = local.ema * ema + (1.0 - local.ema) * jax.lax.stop_gradient(ce)
  mode = KD_MODES.index(local.kd_mode) if mode is None else mode
  last = jnp.asarray(ce.shape[0] - 1 if tier is None else tier)
  best = jnp.argmin(jnp.where(exit_mask(ce.shape[0], tier), ema, jnp.inf))
  return ema, jnp.where(mode == KD_MODES.index('last'), last, best)


def local_loss(logits: jax.Array, labels, weights, ema, kd_w, local: LocalConfig, mode=None,
               tier=None):
  """``(loss, (ema, teacher, ce))`` of stacked exit logits (E, B, C).

  ``tier`` (may be traced): only its exits ``0..tier`` count (None: all E).
  """
  num_exits = logits.shape[0]
  valid = exit_mask(num_exits, tier)
  ce = jnp.where(valid, exit_cross_entropies(logits, labels, weights), 0.0)
  ema, teacher = choose_teacher(ema, ce, local, mode, tier)
  loss = jnp.sum(ce)
  if num_exits > 1:  # the code: no KD term for a single-exit tier
    mode = KD_MODES.index(local.kd_mode) if mode is None else mode
    on = jnp.asarray(mode != KD_MODES.index('none'), jnp.float32)
    if tier is not None:
      on = on * (tier > 0)
    kd = jnp.where(valid, kd_terms(logits, teacher, weights, local.temperature), 0.0)
    loss = loss + on * kd_w * jnp.sum(kd)
  return loss, (ema, teacher, ce)


# ------------------------------------------------------------ local training


class ClientData(NamedTuple):
  """A client's examples as indices into the on-device training arrays."""
  index: jax.Array   # (n_max,) int32, padded
  count: jax.Array   # () int32 number of real examples
  tier: int          # its budget tier (a traced argument of the programs that allow it)
  cid: int = -1      # the client's id (client state kept by id: FedDyn)



def epoch_order(key, count, n_max: int, batch_size: int):
  """One shuffled epoch over a client's ``count`` real rows of ``n_max`` padded ones.

  Returns ``(order, steps)``: a permutation putting the real rows first in random
  order, and ``ceil(count / batch_size)`` batches (the last partial one kept).
  """
  slots = jnp.arange(n_max)
  order = jnp.argsort(jnp.where(slots < count, jax.random.uniform(key, (n_max,)), 2.0))
  return order, (count + batch_size - 1) // batch_size

def make_local_train(cfg: vit.ViTConfig, local: LocalConfig,
                     trace_counts: dict | None = None, batched: bool = False):
  """``train(trainable, frozen, images, labels, index, count, key, lr, kd_w, mode, tier)``, jitted.

  ``trainable`` and ``frozen`` split the full model's parameters (stacked
  blocks, flat by path: ``vit.unstack`` is not applied); ``tier`` is traced,
  so every tier runs this one program (:func:`mg.models.vit.apply_to_tier`:
  the blocks after the tier's exit are skipped, its later exits masked, and
  what the tier does not hold comes back unchanged). ``mode`` indexes
  ``KD_MODES`` (``local.kd_mode`` is not read). Returns ``(trainable, stats)``
  with ``stats = {'loss': mean batch loss, 'teacher': (E,) counts, 'steps'}``.

  ``batched``: the program vmapped over clients of one tier (``index``,
  ``count`` and ``key`` with a leading client axis; everything else shared),
  for :mod:`mg.federated.tiers`' ``vmap`` mapping.
  """
  name = 'batch' if batched else 'all'
  num_exits = cfg.num_exits
  bsz = local.batch_size

  def train(trainable, frozen, images, labels, index, count, key, lr, kd_w, mode, tier):
    if trace_counts is not None:
      trace_counts[name] = trace_counts.get(name, 0) + 1
    n_max = index.shape[0]
    order, steps = epoch_order(key, count, n_max, bsz)

    def loss_fn(tr, x, y, w, ema):
      logits = jnp.stack(vit.apply_to_tier(unflatten({**tr, **frozen}), x, cfg, tier))
      return local_loss(logits, y, w, ema, kd_w, local, mode, tier)

    def body(b, carry):
      tr, ema, loss_sum, teacher_counts = carry
      pos = b * bsz + jnp.arange(bsz)
      valid = pos < count
      ids = index[order[jnp.minimum(pos, n_max - 1)]]
      w = valid.astype(jnp.float32)
      (loss, (ema, teacher, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          tr, images[ids], labels[ids], w, ema)
      if local.clip:
        grads = jax.tree.map(lambda g: jnp.clip(g, -local.clip, local.clip), grads)
      tr = jax.tree.map(lambda p, g: p - lr * g, tr, grads)
      return tr, ema, loss_sum + loss, teacher_counts + jax.nn.one_hot(teacher, num_exits)

    carry = (trainable, jnp.zeros((num_exits,)), jnp.zeros(()), jnp.zeros((num_exits,)))
    trainable, _, loss_sum, teacher_counts = jax.lax.fori_loop(0, steps, body, carry)
    return trainable, {'loss': loss_sum / jnp.maximum(steps, 1),
                       'teacher': teacher_counts, 'steps': steps}

  if batched:
    return jax.jit(jax.vmap(train, in_axes=(None,) * 4 + (0, 0, 0) + (None,) * 4))
  return jax.jit(train)


def held_table(cfg: vit.ViTConfig, regime: str, params) -> dict:
  """``{path: (E, ...) bool}``: what each tier uploads of the trainable parameters (stacked).

  :func:`mg.federated.aggregation.mask_table` of :func:`tier_trainable_paths`;
  ``params`` may be shapes only.
  """
  train = split(traverse_util.flatten_dict(params, sep='/'), regime)[0]
  paths = [set(tier_trainable_paths(cfg, t, regime, params)) for t in range(cfg.num_exits)]
  return aggregation.mask_table(paths, train)


# --------------------------------------------------------------------- server


def make_server(regime: str):
  """``server(params, trees, weights, tiers, table) -> (params, finite)``, jitted.

  The code's ``aggregate_inplace_early_exit``: each trainable entry becomes the
  mean of the sampled clients that hold it (``table``, :func:`held_table`,
  gathered by ``tiers``), weighted by their example counts ``weights``; an
  entry nobody holds keeps its value (:func:`mg.federated.aggregation.held_mean`,
  as accurate as the code's float64 sum). ``trees``: the clients' trained
  trainable parameters (flat, blocks stacked), one per client; ``finite``:
  whether every held entry uploaded is finite.
  """

  @jax.jit
  def server(params, trees, weights, tiers, table):
    flat = traverse_util.flatten_dict(params, sep='/')
    train = split(flat, regime)[0]
    uploads = aggregation.stack_clients(trees)
    held = aggregation.gather_masks(table, tiers)
    new = aggregation.held_mean(train, uploads, weights, held)
    return (traverse_util.unflatten_dict({**flat, **new}, sep='/'),
            aggregation.all_finite(uploads, held))

  return server


# ------------------------------------------------------------------ algorithm


class Hparams(NamedTuple):
  rounds: int
  lr: float = 0.05
  min_lr: float = 0.001
  kd_rounds: float = 300.0


def reefl(cfg: vit.ViTConfig, *, regime: str, local: LocalConfig, hp: Hparams,
          name: str = 'reefl', trace_counts: dict | None = None,
          programs: dict | None = None) -> Algorithm:
  """ReeFL as pure functions around one compiled local-training program for every tier.

  ``programs``: a dict of compiled programs to share between
  algorithms with the same model, regime and local settings but another
  teacher mode (the caller keys it); default: this algorithm's own.

  ``init(params)`` -> state; ``broadcast(state, tier)`` -> (trainable, frozen)
  flat parameters of the full model (every tier gets the same);
  ``client(shared, data, images, labels, key, round_)`` -> ``ClientOutput``
  whose tree is the full trained trainable parameters, left on the device;
  ``server(state, outputs)`` -> (state, diagnostics): :func:`make_server` over
  the stacked outputs, with each client's tier choosing what it holds;
  ``output(state)`` -> full parameters.
  """
  if regime not in REGIMES:
    raise ValueError(f'regime {regime!r}: expected one of {REGIMES}')
  if local.kd_mode not in KD_MODES:
    raise ValueError(f'kd_mode {local.kd_mode!r}: expected one of {KD_MODES}')
  programs = {} if programs is None else programs
  mode = jnp.int32(KD_MODES.index(local.kd_mode))
  # The tiers' mask table and upload sizes, from the first state's shapes; kept
  # with the programs (a batched sweep builds its members' algorithm every round).
  held = programs.setdefault(('held', cfg, regime), {})

  def init(params):
    return server_lib.init_state(params)

  def held_of(params):
    if not held:
      shapes = jax.eval_shape(lambda p: p, params)
      table = held_table(cfg, regime, shapes)
      train = split(traverse_util.flatten_dict(shapes, sep='/'), regime)[0]
      held.update(table=jax.tree.map(jnp.asarray, table),
                  sizes=aggregation.held_sizes(table, train))
    return held

  def broadcast(state, tier):
    del tier  # every tier gets the full model; it trains and uploads what it holds
    return split(traverse_util.flatten_dict(state.params, sep='/'), regime)

  def client(shared, data: ClientData, images, labels, key, round_):
    if 'all' not in programs:
      programs['all'] = make_local_train(cfg, local, trace_counts)
    if 'server' not in programs:
      programs['server'] = make_server(regime)
    lr = learning_rate(round_, hp.rounds, hp.lr, hp.min_lr)
    kd_w = kd_weight(round_, hp.kd_rounds)
    trained, stats = programs['all'](shared[0], shared[1], images, labels, data.index,
                                     data.count, key, jnp.float32(lr), jnp.float32(kd_w), mode,
                                     jnp.int32(data.tier))
    return ClientOutput(trained, data.count, dict(stats, tier=data.tier, cid=data.cid))

  def client_batch(shared, data: list, images, labels, keys, round_):
    if 'batch' not in programs:
      programs['batch'] = make_local_train(cfg, local, trace_counts, batched=True)
    if 'server' not in programs:
      programs['server'] = make_server(regime)
    lr = learning_rate(round_, hp.rounds, hp.lr, hp.min_lr)
    kd_w = kd_weight(round_, hp.kd_rounds)
    group = tiers_lib.stack_data(data)
    out = programs['batch'](shared[0], shared[1], images, labels, group.index, group.count,
                            keys, jnp.float32(lr), jnp.float32(kd_w), mode,
                            jnp.int32(group.tier))
    return [ClientOutput(trained, d.count, dict(stats, tier=d.tier, cid=d.cid))
            for (trained, stats), d in zip(tiers_lib.split_rows(out, len(data)), data)]

  def server(state, outputs):
    h = held_of(state.params)
    params, finite = programs['server'](
        state.params, [o.tree for o in outputs], jnp.stack([o.weight for o in outputs]),
        jnp.asarray([o.metrics['tier'] for o in outputs], jnp.int32), h['table'])
    return (state._replace(params=params, round=state.round + 1),
            {'finite': finite, 'uploaded': sum(h['sizes'][o.metrics['tier']] for o in outputs)})

  def output(state):
    return state.params

  return Algorithm(name, init, broadcast, client, server, output, client_batch)


def sample_clients(seed: int, round_: int, num_clients: int, per_round: int) -> np.ndarray:
  """Clients of a round, uniformly without replacement; a function of (seed, round)."""
  rng = np.random.default_rng([seed, round_])
  return np.sort(rng.choice(num_clients, size=per_round, replace=False))
