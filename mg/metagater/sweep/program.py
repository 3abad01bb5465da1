"""Every member of a sweep trained and evaluated by one compiled program.

A member is one method's run at some hyperparameters and seed. Its round is
the method's own compiled round (``mg.federated.make_round``) and its target
protocol the method's own fast adaptation (``Method.adapt``); the sweep maps
both over a leading member axis with ``jax.vmap``:

* hyperparameters are arrays in ``ServerState.hparams`` (and the adaptation
  step size is an argument), so one program serves every value;
* members are laid out ``(G, M)``: ``G`` seed groups (a seed fixes the data
  partition, as in a single run) of ``M`` members each. The inner ``vmap`` runs
  the members of a group on the group's data (shared, not copied); the outer
  one maps the groups over their stacked data;
* the member axis ``M`` is sharded over the devices
  (``NamedSharding(Mesh(devices, ('sweep',)), P(None, 'sweep'))``); groups are
  padded to a multiple of the device count with copies whose results are
  dropped;
* a member whose loss or parameters become non-finite keeps its last finite
  state (``jnp.where`` per member) and records the round: it is reported
  diverged and touches no other member. The evaluations record whether each
  target's adapted parameters and logits were finite, so ``mg.metagater.sweep.runner``
  applies the single run's other divergence rules (non-finite adaptation or
  evaluation, a loss above ``mg.harness.divergence.LOSS_BOUND`` times the first round's);
* after the last round every member is also adapted and scored on the
  validation tasks, exactly as on the targets (with its own evaluation key):
  the score a sweep ranks configurations by (``mg.sweep.results``).

Member ``i`` reproduces ``mg.metagater.run.run`` with its config (repeat 0): the same
partition (from its seed), the same keys (``member_keys``), the same rounds,
the same divergence rule and the same target evaluations. The batched program
rounds differently from the single one (a batched convolution sums in another
order), so the two agree to float tolerance round by round; over tens of
rounds a gate whose noisy logit sits at the hard threshold (docs/design.md s.1) can
flip in one and not the other, after which the trajectories are two equally
valid runs (measured on digits: losses equal to 1e-7 for 6-12 rounds, then
1e-2 apart) as between any two float-equivalent programs.

Fields that do not change a shape could also be traced through
``optax.inject_hyperparams``; here the algorithms keep them in their state
already, which is the same mechanism (hyperparameters as state, not constants).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mg.metagater import adapt
from mg.metagater import run as run_lib
from mg.data import TaskArrays
from mg.federated import mapping

AXIS = 'sweep'
# Folded into a member's evaluation key for its validation tasks.
VALIDATION_STREAM = 0x7A11D


def member_keys(seed: int, method: str):
  """``(init, train, eval)`` keys of repeat 0 of a single run with ``seed``."""
  return run_lib.method_keys(run_lib.repeat_key(seed, 0), method)


class Layout(NamedTuple):
  """Where each member sits: ``slots[g, m]`` is a member index.

  Attributes:
    seeds: the seed of each group ``g``.
    slots: ``(G, M)`` member indices; padding slots repeat a member of the group.
    first_slot: ``member index -> (g, m)`` of the slot whose results count.
  """
  seeds: tuple
  slots: np.ndarray
  first_slot: dict


def layout(seeds: Sequence[int], num_devices: int = 1) -> Layout:
  """Groups members by seed, padded to equal groups of a multiple of ``num_devices``."""
  groups = {}
  for index, seed in enumerate(seeds):
    groups.setdefault(seed, []).append(index)
  size = max(len(g) for g in groups.values())
  size = -(-size // num_devices) * num_devices
  slots = np.array([g + [g[-1]] * (size - len(g)) for g in groups.values()], np.int64)
  first = {}
  for g, row in enumerate(slots):
    for m, index in enumerate(row):
      first.setdefault(int(index), (g, m))
  return Layout(tuple(groups), slots, first)


class SweepData(NamedTuple):
  """The data of every seed group, stacked ``(G, ...)`` and shared by all methods."""
  train: TaskArrays
  support: TaskArrays
  query: TaskArrays
  validation_support: TaskArrays
  validation_query: TaskArrays


def pad_rows(tasks: TaskArrays, rows: int) -> TaskArrays:
  """``tasks`` padded with masked rows to ``rows`` per task (same results)."""
  extra = rows - tasks.x.shape[1]

  def pad(a):
    return np.pad(np.asarray(a), [(0, 0), (0, extra)] + [(0, 0)] * (a.ndim - 2))

  return TaskArrays(pad(tasks.x), pad(tasks.y), pad(tasks.mask), np.asarray(tasks.count))


def stack_data(feds: Sequence[Any]) -> SweepData:
  """Stacks the ``FederatedData`` of each seed group, padding rows to a common size."""
  def stack(groups):
    rows = max(t.x.shape[1] for t in groups)
    padded = [pad_rows(t, rows) for t in groups]
    return jax.tree.map(lambda *xs: np.stack(xs), *padded)
  return SweepData(stack([f.train for f in feds]),
                   stack([f.target_support for f in feds]),
                   stack([f.target_query for f in feds]),
                   stack([f.validation_support for f in feds]),
                   stack([f.validation_query for f in feds]))


class Shardings(NamedTuple):
  members: NamedSharding     # (G, M, ...) arrays: the member axis over devices
  replicated: NamedSharding  # the data


def shardings(devices=None) -> Shardings:
  mesh = Mesh(np.array(devices or jax.devices()), (AXIS,))
  return Shardings(NamedSharding(mesh, PartitionSpec(None, AXIS)),
                   NamedSharding(mesh, PartitionSpec()))


class Members(NamedTuple):
  """The stacked ``(G, M)`` starting point of one method's members."""
  state: Any
  adapt_lr: jax.Array
  train_keys: jax.Array
  eval_keys: jax.Array
  validation_keys: jax.Array


def init_members(method, hparams: Sequence[dict], adapt_lrs: Sequence[float],
                 seeds: Sequence[int], lay: Layout, sharding=None) -> Members:
  """Each member's initial server state and keys, stacked in ``lay``'s slots.

  Args:
    method: the ``mg.metagater.methods.Method`` shared by the members.
    hparams: per member, the keyword arguments of ``method.algorithm.init``.
    adapt_lrs: per member, the adaptation step size.
    seeds: per member, its seed.
    lay: the ``Layout`` of the members.
    sharding: a ``NamedSharding`` for the ``(G, M)`` arrays, or None.
  """
  params_of = {s: method.model.init(member_keys(s, method.name)[0]) for s in set(seeds)}
  states = [method.algorithm.init(params_of[s], **hp) for s, hp in zip(seeds, hparams)]
  keys = [member_keys(s, method.name) for s in seeds]
  shape = lay.slots.shape
  flat = lay.slots.ravel()

  def gather(per_member, stack=np.stack):
    return jax.tree.map(lambda *xs: stack([xs[i] for i in flat]).reshape(shape + xs[0].shape),
                        *per_member)

  members = Members(
      state=gather([jax.device_get(s) for s in states]),
      adapt_lr=np.asarray(adapt_lrs, np.float32)[flat].reshape(shape),
      train_keys=jnp.stack([keys[i][1] for i in flat]).reshape(shape),
      eval_keys=jnp.stack([keys[i][2] for i in flat]).reshape(shape),
      validation_keys=jnp.stack([jax.random.fold_in(keys[i][2], VALIDATION_STREAM)
                                 for i in flat]).reshape(shape))
  if sharding is None:
    return jax.tree.map(jnp.asarray, members)
  return jax.device_put(members, sharding)


class Program(NamedTuple):
  """One method's compiled sweep functions.

  Attributes:
    step: ``step(state, alive, diverged_round, train, train_keys, t) -> (state,
      alive, diverged_round, loss)``: round ``t`` of every member; a member that
      turns non-finite keeps its state, ``alive`` drops and ``diverged_round``
      records ``t``; ``loss`` is NaN for members not alive.
    evaluate: ``evaluate(state, adapt_lr, eval_keys, t, support, query) ->
      (mg.metagater.adapt.Evaluation, adapted_finite)`` of ``(G, M, targets)`` arrays: each
      member's output model adapted on each target's support split and scored on
      its query split, and whether the adapted parameters were finite.
  """
  step: Any
  evaluate: Any


MEMBER_MAPPINGS = ('vmap', 'loop')


def default_member_mapping(backend: str, model_name: str) -> str:
  """How a sweep maps its members, measured (``experiments.sweep --members=...``).

  * ``vmap``: one batched program over every member. On XLA:CPU a
    convolution over per-member weights becomes a grouped convolution
    (docs/speed.md).
  * ``loop``: the members one after another through the single run's own
    compiled round (hyperparameters are arrays in the state, so every member
    shares one program): a plain convolution per task, as a single run.

  Measured on a 2-core CPU: ``configs/cifar10.py:quick`` at 10 rounds, a sweep
  of 2 MetaGater members (``--members=vmap`` vs ``loop``): 420 s vs 118 s of
  sweep time (260 s vs 92 s of process CPU time, user + system); the rows
  agree to 1e-3 (validation accuracy 0.5686 / 0.5688).

  XLA:CPU with a convolutional model: ``loop``; otherwise (an MLP's batched
  matmuls, GPU/TPU) ``vmap``.
  """
  return 'loop' if backend == 'cpu' and model_name != 'mlp' else 'vmap'


def resolve_member_mapping(mapping_name: str, backend: str, model_name: str) -> str:
  """``'auto'`` replaced by ``default_member_mapping``; anything else checked."""
  if mapping_name == 'auto':
    return default_member_mapping(backend, model_name)
  if mapping_name not in MEMBER_MAPPINGS:
    raise ValueError(f"sweep member mapping {mapping_name!r} is not one of "
                     f"{('auto',) + MEMBER_MAPPINGS}")
  return mapping_name


def build_program(method, *, num_train: int, tasks_per_round: int,
                  strategy: str, members: str = 'vmap') -> Program:
  """The sweep ``step`` and ``evaluate`` of ``method``'s members.

  ``members`` (``MEMBER_MAPPINGS``): ``vmap`` jits one program over the
  ``(G, M)`` slots; ``loop`` runs each slot through the single-member functions
  (the round as a single run compiles it, ``adapt + evaluate`` jitted once) and
  stacks the results, so both return the same ``(G, M, ...)`` arrays.
  """
  if method.algorithm is None:
    raise ValueError(f'{method.name} trains nothing of its own; it cannot be swept')
  if 'lr' not in getattr(method.adapt, 'keywords', {}):
    raise ValueError(f'{method.name}: its adaptation takes no step size lr to trace')
  alg = method.algorithm
  round_fn = mapping.make_round(alg, num_tasks=num_train, tasks_per_round=tasks_per_round,
                                strategy=strategy)

  def member_step(state, alive, diverged_round, data, key, t):
    new_state, diagnostics = round_fn(state, data, jax.random.fold_in(key, t))
    loss = diagnostics.get('loss', jnp.zeros(()))
    # The single run's rule (mg.metagater.train.train): non-finite parameters or loss.
    finite = diagnostics['finite'] & jnp.isfinite(loss)
    keep = alive & finite
    state = jax.tree.map(lambda new, old: jnp.where(keep, new, old), new_state, state)
    diverged_round = jnp.where(alive & ~finite, t, diverged_round)
    return state, keep, diverged_round, jnp.where(keep, loss, jnp.nan)

  def member_evaluate(state, lr, key, t, support, query, target):
    # One member at one target; ``support``/``query`` are that target's arrays.
    params_j, _ = method.adapt(  # Method.adapt is a partial: the lr override traces it.
        alg.output(state), support,
        jax.random.fold_in(jax.random.fold_in(key, t), target), 0.0, lr=lr)
    return adapt.evaluate(method.model, params_j, query), adapt.all_finite(params_j)

  # Members innermost, then targets, then seed groups: a member-level batch of a
  # target's (shared) images against per-member weights stays one plain
  # convolution, and jax has no batching rule for a grouped convolution with
  # only the weights batched (what targets-inside-members would need).
  over_members = jax.vmap(member_evaluate, in_axes=(0, 0, 0, None, None, None, None))
  over_targets = jax.vmap(over_members, in_axes=(None, None, None, None, 0, 0, 0))

  def group_evaluate(state, lr, key, t, support, query):
    # Targets or validation tasks: as many as ``support`` holds (static).
    tasks = jnp.arange(support.count.shape[0])
    scores = over_targets(state, lr, key, t, support, query, tasks)
    return jax.tree.map(lambda a: jnp.moveaxis(a, 0, 1), scores)  # (M, targets)

  if members == 'loop':
    return _looped(member_step, jax.jit(member_evaluate))
  group_step = jax.vmap(member_step, in_axes=(0, 0, 0, None, 0, None))
  return Program(
      step=jax.jit(jax.vmap(group_step, in_axes=(0, 0, 0, 0, 0, None)),
                   donate_argnums=(0,)),
      evaluate=jax.jit(jax.vmap(group_evaluate, in_axes=(0, 0, 0, None, 0, 0))))


def _stack_slots(outputs, shape):
  """Per-slot outputs (row-major over ``shape``) stacked into ``shape + ...`` arrays."""
  return jax.tree.map(lambda *xs: jnp.stack(xs).reshape(shape + jnp.shape(xs[0])), *outputs)


def _looped(member_step, evaluate_one) -> Program:
  """``Program`` over the ``(G, M)`` slots by host loops over one-member functions.

  ``member_step`` is traced by no outer ``jit``: its round is the single run's
  (a ``loop`` round dispatches one compiled program per task). A group's data,
  and for evaluation each of its tasks, are sliced out once per stacked array
  and reused across rounds and members.
  """
  slices = {}

  def group(tree, g, per_task=False):
    key = (id(tree), g, per_task)
    if key not in slices:
      if len(slices) > 64:  # keys of stacked arrays no longer in use
        slices.clear()
      part = jax.tree.map(lambda a: a[g], tree)
      if per_task:
        part = [jax.tree.map(lambda a: a[j], part)  # pylint: disable=cell-var-from-loop
                for j in range(part.count.shape[0])]
      slices[key] = (tree, part)
    return slices[key][1]

  def step(state, alive, diverged_round, train, train_keys, t):
    shape = alive.shape
    outputs = []
    for g, m in np.ndindex(shape):
      pick = lambda a: a[g, m]  # pylint: disable=cell-var-from-loop
      outputs.append(member_step(jax.tree.map(pick, state), alive[g, m],
                                 diverged_round[g, m], group(train, g), train_keys[g, m], t))
    return _stack_slots(outputs, shape)

  def evaluate(state, adapt_lr, keys, t, support, query):
    shape = adapt_lr.shape
    tasks = support.count.shape[1]
    outputs = []
    for g, m in np.ndindex(shape):
      member = jax.tree.map(lambda a: a[g, m], state)  # pylint: disable=cell-var-from-loop
      outputs.extend(
          evaluate_one(member, adapt_lr[g, m], keys[g, m], t, sup, qry,
                       jnp.asarray(j, jnp.int32))
          for j, (sup, qry) in enumerate(zip(group(support, g, True), group(query, g, True))))
    return _stack_slots(outputs, shape + (tasks,))

  return Program(step=step, evaluate=evaluate)


class Trace(NamedTuple):
  """What a sweep's training recorded, as numpy arrays over ``(G, M)`` slots.

  Attributes:
    eval_rounds: the rounds evaluated (every ``eval_every`` and the last).
    accuracy, sparsity, macs_ratio: ``(E, G, M, targets)`` evaluations.
    logits_finite, adapted_finite: ``(E, G, M, targets)``: whether the logits
      and the adapted parameters of each evaluation were finite.
    validation_accuracy, validation_sparsity: ``(G, M, validation tasks)``
      after the last round.
    validation_finite: ``(G, M, validation tasks)``: whether the validation
      tasks' adapted parameters and logits were finite.
    losses: ``(R, G, M)`` mean local loss per round (NaN once diverged).
    diverged_round: ``(G, M)``: the round a member turned non-finite, 0 if never.
    state: the final stacked state (on the devices).
  """
  eval_rounds: list
  accuracy: np.ndarray
  sparsity: np.ndarray
  macs_ratio: np.ndarray
  losses: np.ndarray
  diverged_round: np.ndarray
  state: Any
  logits_finite: Optional[np.ndarray] = None
  adapted_finite: Optional[np.ndarray] = None
  validation_accuracy: Optional[np.ndarray] = None
  validation_sparsity: Optional[np.ndarray] = None
  validation_finite: Optional[np.ndarray] = None


def train(program: Program, members: Members, data: SweepData, *, rounds: int,
          eval_every: int, on_round=None) -> Trace:
  """Runs ``rounds`` rounds of every member, evaluating as a single run does.

  One dispatch per round for all members; nothing is read back from the
  devices until the end (``on_round(t)`` is called after each dispatch).
  """
  shape = members.adapt_lr.shape
  sharding = getattr(members.adapt_lr, 'sharding', None)
  alive = jax.device_put(np.ones(shape, bool), sharding)
  diverged = jax.device_put(np.zeros(shape, np.int32), sharding)
  state, losses, evals = members.state, [], []
  for t in range(1, rounds + 1):
    step = jnp.asarray(t, jnp.int32)
    state, alive, diverged, loss = program.step(
        state, alive, diverged, data.train, members.train_keys, step)
    losses.append(loss)
    if t % eval_every == 0 or t == rounds:
      evals.append((t, program.evaluate(state, members.adapt_lr, members.eval_keys, step,
                                        data.support, data.query)))
    if on_round is not None:
      on_round(t)
  validation, validation_adapted = program.evaluate(state, members.adapt_lr, members.validation_keys,
                                   jnp.asarray(rounds, jnp.int32), data.validation_support,
                                   data.validation_query)
  evals, losses, diverged, validation, validation_adapted = jax.device_get(
      (evals, losses, diverged, validation, validation_adapted))
  return Trace(
      eval_rounds=[t for t, _ in evals],
      accuracy=np.stack([e.accuracy for _, (e, _) in evals]),
      sparsity=np.stack([e.sparsity for _, (e, _) in evals]),
      macs_ratio=np.stack([e.macs_ratio for _, (e, _) in evals]),
      losses=np.stack(losses), diverged_round=np.asarray(diverged), state=state,
      logits_finite=np.stack([np.asarray(e.finite, bool) for _, (e, _) in evals]),
      adapted_finite=np.stack([np.asarray(f, bool) for _, (_, f) in evals]),
      validation_accuracy=np.asarray(validation.accuracy),
      validation_sparsity=np.asarray(validation.sparsity),
      validation_finite=np.asarray(validation.finite, bool)
      & np.asarray(validation_adapted, bool))
