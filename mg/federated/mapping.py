"""Mapping the sampled tasks' local solves onto the hardware, and one round.

A federated algorithm (fedjax style) is a set of pure functions:
``broadcast(state) -> shared`` (what the cloud sends), ``client(shared, task,
key) -> ClientOutput`` (one node's local work) and ``server(state, mean,
metrics) -> (state, diagnostics)`` (the cloud's update from the weighted mean
of the clients' trees). ``make_round`` composes them into
``round(state, data, key)``, sampling tasks without replacement inside the
compiled program (docs/design.md s.3, Algorithm 1 steps 2-4).

Strategies for mapping the clients (docs/speed.md, "Why the client mapping is a measured, per-backend choice", has the CPU measurements;
``python -m experiments.bench`` measures them on any machine):
  * ``fused``: exact when every client takes one gradient step from the
    broadcast point (MetaGater and FedAvg with ``K = 1``): the weighted mean
    of the clients' steps is one step on the weighted mean loss, computed with
    the parameters shared, so each convolution runs once over all sampled
    tasks' images (``mg.federated.local``, "Fused one-step solves"). Where it
    is not exact (``K > 1``, Per-FedAvg) the round uses its ``fallback``.
    On XLA:CPU one batch of all tasks' images runs slower per image than
    per-task batches (caches); it pays on accelerators.
  * ``vmap``: one batched program over tasks. Best on GPU/TPU; on XLA:CPU the
    per-client convolutions become grouped convolutions (~5x slower).
  * ``unroll``: the tasks traced one after another inside one program:
    sequential plain convolutions (fast on XLA:CPU), compile time grows with
    the number of tasks.
  * ``scan``: ``lax.scan`` over tasks: small program, but convolutions in a
    loop body are ~25x slower on XLA:CPU (jax-ml/jax#12868).
  * ``loop``: a host loop over one compiled per-task function; compiles once
    whatever the number of tasks, at a dispatch per task. The fastest
    measured for convolutional models on XLA:CPU, with the least memory.

With a ``mesh`` (``mg.federated.sharding``) the task axis of ``vmap`` and
``fused`` rounds is sharded over every device, padded with zero-weight dummy
tasks to a multiple of the device count.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from mg.federated import local
from mg.federated import sharding

STRATEGIES = ('vmap', 'unroll', 'scan', 'loop', 'fused')
# Strategies that are one traceable function of the sampled tasks.
TRACEABLE = ('vmap', 'unroll', 'scan', 'fused')
# Strategies with a task axis in the program, which a mesh can shard.
SHARDABLE = ('vmap', 'fused')


class ClientOutput(NamedTuple):
  """What one node returns: a tree to average, its weight, scalar metrics."""
  tree: Any
  weight: jax.Array
  metrics: dict


class Algorithm(NamedTuple):
  """A federated algorithm as pure functions (see the module docstring).

  ``client_batch``: the client over a group of clients at once, for the
  rounds of clients in tiers (:mod:`mg.federated.tiers`); None where unused.
  """
  name: str
  init: Callable
  broadcast: Callable
  client: Callable
  server: Callable
  output: Callable
  client_batch: Optional[Callable] = None


class NotFusable(ValueError):
  """The ``fused`` mapping would not equal the per-task mapping here."""


# On XLA:CPU an MLP's vmapped round outgrows the caches past this many tasks
# (MNIST, K = 5: vmap 6.5 ms vs loop 7.3 ms at 5 tasks, 27 vs 23 ms at 20,
# 152 vs 92 ms at 80); a loop of per-task programs keeps each task's working set
# small.
CPU_MLP_VMAP_MAX_TASKS = 10


def default_strategy(backend: str, model_name: Optional[str] = None,
                     local_steps: Optional[int] = None, devices: int = 1,
                     tasks_per_round: Optional[int] = None) -> str:
  """The mapping measured fastest (``python -m experiments.bench``).

  * XLA:CPU, convolutional models: ``loop``. CNN-4 on CIFAR-10 shapes, 20
    tasks, ``K = 1``: loop ran at the single-step roofline, unroll at ~0.8 of
    it (with 7x the memory and 3x the compile time), fused at ~0.45 (one batch
    of 1,280 images runs slower per image than 20 of 64 on a CPU: caches), vmap
    at ~0.25 (grouped convolutions), scan at 0.02 (jax#12868).
  * XLA:CPU, MLP: ``vmap`` up to ``CPU_MLP_VMAP_MAX_TASKS`` tasks per round
    (batched matmuls in one program), ``loop`` beyond.
  * GPU/TPU, or several devices: ``fused`` for one local step (one batched
    step over all sampled tasks' images; exact, see ``local``), else
    ``vmap``. Not measured on an accelerator (none on the machines this was
    written on): ``experiments.bench`` measures it on one. Several devices
    simulated on one 2-core CPU (``--xla_force_host_platform_device_count=2``,
    CNN-4, 20 tasks): sharded ``fused`` ran at 0.39 of the roofline, sharded
    ``vmap`` 0.12 (0.09 at ``K = 5``), unsharded ``loop`` 1.04: the sharded
    path works, but devices that share the same cores gain nothing; the
    default is for devices with cores (or chips) of their own.

  Args:
    backend: ``jax.default_backend()``.
    model_name: ``config.model.name`` (None: a convolutional model).
    local_steps: ``K`` when known.
    devices: devices the round is sharded over.
    tasks_per_round: when known.
  """
  if devices > 1 or backend != 'cpu':
    return 'fused' if local_steps == 1 else 'vmap'
  if model_name == 'mlp':
    few = tasks_per_round is None or tasks_per_round <= CPU_MLP_VMAP_MAX_TASKS
    return 'vmap' if few else 'loop'
  return 'loop'


def fallback_strategy(backend: str, model_name: Optional[str] = None,
                      devices: int = 1) -> str:
  """The traceable mapping ``fused`` falls back to where it is not exact."""
  strategy = default_strategy(backend, model_name, None, devices)
  return 'unroll' if strategy == 'loop' else strategy


def resolve_strategy(strategy: str, model_name: Optional[str] = None,
                     local_steps: Optional[int] = None, devices: int = 1,
                     tasks_per_round: Optional[int] = None) -> str:
  """``meta.mapping`` with 'auto' replaced by ``default_strategy``."""
  if strategy == 'auto':
    return default_strategy(jax.default_backend(), model_name, local_steps, devices,
                            tasks_per_round)
  if strategy not in STRATEGIES:
    raise ValueError(f'meta.mapping={strategy!r} is not one of '
                     f"{('auto',) + STRATEGIES}")
  return strategy


def _weighted_mean(trees, weights):
  """Mean over the leading axis of ``trees`` weighted by ``weights``.

  A zero weight drops its row even when that row is not finite.
  """
  total = jnp.maximum(jnp.sum(weights), 1e-12)

  def mean(t):
    keep = (weights > 0).reshape((-1,) + (1,) * (t.ndim - 1))
    return jnp.tensordot(weights / total, jnp.where(keep, t, 0), axes=1).astype(t.dtype)

  return jax.tree.map(mean, trees)


def _client_on(alg: Algorithm):
  def run(shared, data, task_id, key):
    return alg.client(shared, local.task_slice(data, task_id), key)
  return run


def _means(out, valid):
  weights = out.weight * valid
  return _weighted_mean(out.tree, weights), _weighted_mean(out.metrics, weights)


def map_clients(alg: Algorithm, strategy: str, mesh=None):
  """``f(shared, data, ids, keys, valid=None) -> (weighted mean tree, metrics)``.

  ``valid`` (T,) multiplies the clients' weights (0 for padding dummies).
  Traceable for every strategy in ``TRACEABLE``; ``fused`` raises
  ``NotFusable`` at trace time where it would not be exact. With a ``mesh``
  (``vmap``, ``fused``) the per-task values are sharded over its devices, so
  each device computes its own tasks and the weighted mean is one all-reduce.
  """
  run = _client_on(alg)

  def ones_if_none(valid, ids):
    return jnp.ones(ids.shape, jnp.float32) if valid is None else valid

  if strategy == 'vmap':
    def mapped(shared, data, ids, keys, valid=None):
      out = jax.vmap(run, in_axes=(None, None, 0, 0))(shared, data, ids, keys)
      return _means(sharding.shard_tasks(out, mesh), ones_if_none(valid, ids))
    return mapped

  if strategy == 'unroll':
    def mapped(shared, data, ids, keys, valid=None):
      outs = [run(shared, data, ids[i], keys[i]) for i in range(ids.shape[0])]
      out = jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
      return _means(out, ones_if_none(valid, ids))
    return mapped

  if strategy == 'scan':
    def mapped(shared, data, ids, keys, valid=None):
      valid = ones_if_none(valid, ids)

      def body(acc, inputs):
        task_id, key, ok = inputs
        out = run(shared, data, task_id, key)
        weight = out.weight * ok
        acc = jax.tree.map(lambda a, x: a + jnp.where(weight > 0, weight * x, 0), acc,
                           (out.tree, out.metrics, jnp.ones(())))
        return acc, None

      first = jax.eval_shape(run, shared, data, ids[0], keys[0])
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                           (first.tree, first.metrics, jnp.ones(())))
      (tree_sum, metric_sum, weight_sum), _ = jax.lax.scan(body, zeros, (ids, keys, valid))
      total = jnp.maximum(weight_sum, 1e-12)
      return (jax.tree.map(lambda x: (x / total).astype(x.dtype), tree_sum),
              jax.tree.map(lambda x: x / total, metric_sum))
    return mapped

  if strategy == 'fused':
    return _fused(alg, mesh)

  raise ValueError(f'strategy {strategy!r} is not traceable; use make_round')


def _fused(alg: Algorithm, mesh=None):
  """The ``fused`` mapping (module docstring); checks its exactness while tracing."""
  run = _client_on(alg)

  def mapped(shared, data, ids, keys, valid=None):
    valid = jnp.ones(ids.shape, jnp.float32) if valid is None else valid
    # The clients' weights (e.g. FedAvg's sample counts); XLA drops the rest of
    # this vmapped trace, whose results are unused.
    weights = valid * jax.vmap(run, in_axes=(None, None, 0, 0))(shared, data, ids, keys).weight
    tasks = sharding.shard_tasks(jax.vmap(local.task_slice, in_axes=(None, 0))(data, ids), mesh)
    first_key = keys[0]
    with local.fused_tasks(tasks, keys, weights) as fused:
      out = alg.client(shared, local.task_slice(data, ids[0]), first_key)
    _check_fused(alg.name, fused.calls, out, shared, first_key)
    return out.tree, out.metrics

  return mapped


def _check_fused(name, calls, out, shared, key):
  """Raises ``NotFusable`` unless the client is one shared-point step passed through.

  Exact means: one ``local_solve`` call with ``steps == 1``, from the broadcast
  point itself, with the client's own key and a step size and ``lam`` that do
  not depend on the task, whose solution is the client's tree and whose loss
  is every metric. Checked on the traced values' identities.
  """
  if len(calls) != 1:
    raise NotFusable(f'{name}: its client makes {len(calls)} local_solve calls, '
                     'not one (fused needs a single K = 1 local solve)')
  arguments, (z, loss) = calls[0]
  shared_ids = {id(leaf) for leaf in jax.tree.leaves(shared)}
  is_shared = lambda value: (isinstance(value, (int, float)) or id(value) in shared_ids)
  if arguments['steps'] != 1:
    raise NotFusable(f"{name}: local_steps={arguments['steps']}; fused is exact "
                     'only for one local step (K = 1)')
  if not all(id(leaf) in shared_ids for leaf in jax.tree.leaves(arguments['x_md'])):
    raise NotFusable(f'{name}: the local solve does not start at the broadcast point')
  if arguments['key'] is not key:
    raise NotFusable(f"{name}: the local solve does not use the client's key")
  if not (is_shared(arguments['learning_rate']) and is_shared(arguments['lam'])):
    raise NotFusable(f'{name}: the local step size or lambda depends on the task')
  if out.tree is not z:
    raise NotFusable(f'{name}: the client changes the local solution before averaging')
  if not all(leaf is loss for leaf in jax.tree.leaves(out.metrics)):
    raise NotFusable(f"{name}: the client's metrics are not the local loss")


def sample_tasks(key: jax.Array, num_tasks: int, tasks_per_round: int):
  """Tasks without replacement and one key per sampled task (step 2)."""
  sample_key, client_key = jax.random.split(key)
  ids = jax.random.choice(sample_key, num_tasks, (tasks_per_round,), replace=False)
  return ids, jax.random.split(client_key, tasks_per_round)


class Round:
  """``round(state, data, key) -> (state, diagnostics)``, and how it runs.

  Attributes:
    strategy: the mapping requested.
    mapping: the mapping that runs (after a ``fused`` fallback); known once
      the round has been traced (first call or ``lower``).
    note: why a fallback happened, else ''.
    mesh: the device mesh the tasks are sharded over, or None.
    slots: tasks per round after padding to the device count.
  """

  def __init__(self, fn, strategy, mesh, slots, info, programs=None):
    self._fn = fn
    self.strategy = strategy
    self.mesh = mesh
    self.slots = slots
    self._info = info
    self._programs = programs

  @property
  def mapping(self) -> Optional[str]:
    return self._info.get('mapping')

  @property
  def note(self) -> str:
    return self._info.get('note', '')

  def __call__(self, state, data, key):
    return self._fn(state, data, key)

  def lower(self, state, data, key):
    """``jax.stages.Lowered`` of a one-program round (not for ``loop``)."""
    if self._programs is not None:
      raise ValueError("a 'loop' round is several programs; see programs()")
    return self._fn.lower(state, data, key)

  def programs(self) -> dict:
    """The jitted functions a round runs, by name (one for traceable rounds)."""
    return dict(self._programs) if self._programs is not None else {'round': self._fn}

  def _cache_size(self) -> int:
    fn = self._fn if self._programs is None else self._programs['accumulate']
    return fn._cache_size()


def make_round(alg: Algorithm, *, num_tasks: int, tasks_per_round: int,
               strategy: str, mesh=None, fallback: Optional[str] = None) -> Round:
  """``round(state, data, key) -> (state, diagnostics)`` for one algorithm.

  ``data`` is the stacked ``TaskArrays`` of all meta-training tasks, already on
  the device(s) (``sharding.place``); the sampled tasks are gathered by index
  inside the program. Every strategy but ``loop`` is one jitted function.

  Args:
    alg: the algorithm.
    num_tasks: meta-training tasks in ``data``.
    tasks_per_round: ``|S_t|``.
    strategy: one of ``STRATEGIES`` (see ``resolve_strategy`` for 'auto').
    mesh: a ``sharding.client_mesh`` to shard the task axis over (``vmap`` and
      ``fused`` only); the state and data must be placed on it.
    fallback: the traceable mapping ``fused`` uses where it is not exact;
      default ``vmap`` with a mesh, else ``fallback_strategy(backend)``.
  """
  if strategy not in STRATEGIES:
    raise ValueError(f'strategy {strategy!r} is not one of {STRATEGIES}')
  if mesh is not None and strategy not in SHARDABLE:
    raise ValueError(f'strategy {strategy!r} cannot shard the tasks over devices; '
                     f'use one of {SHARDABLE} (meta.mapping) or meta.shard_clients=False')
  devices = sharding.num_shards(mesh)
  if fallback is None:
    fallback = ('vmap' if mesh is not None
                else fallback_strategy(jax.default_backend(), devices=devices))
  if fallback not in TRACEABLE or fallback == 'fused' or (
      mesh is not None and fallback not in SHARDABLE):
    raise ValueError(f'fallback {fallback!r} must be one of '
                     f"{SHARDABLE[:1] if mesh is not None else TRACEABLE[:-1]}")
  if strategy == 'loop':
    return _loop_round(alg, num_tasks, tasks_per_round)

  slots = sharding.padded_size(tasks_per_round, mesh)
  info = {} if strategy == 'fused' else {'mapping': strategy}

  def round_fn(state, data, key):
    ids, keys = sample_tasks(key, num_tasks, tasks_per_round)
    ids, keys = sharding.pad_tasks(ids, keys, slots)
    valid = sharding.task_valid(tasks_per_round, slots)
    ids, keys, valid = sharding.shard_tasks((ids, keys, valid), mesh)
    shared = alg.broadcast(state)
    try:
      mean_tree, metrics = map_clients(alg, strategy, mesh)(shared, data, ids, keys, valid)
      info.setdefault('mapping', strategy)
    except NotFusable as e:
      info.update(mapping=fallback, note=f'fused -> {fallback}: {e}')
      mean_tree, metrics = map_clients(alg, fallback, mesh)(shared, data, ids, keys, valid)
    mean_tree, metrics = sharding.replicate((mean_tree, metrics), mesh)
    return alg.server(state, mean_tree, metrics)

  return Round(jax.jit(round_fn), strategy, mesh, slots, info)


def _loop_round(alg: Algorithm, num_tasks: int, tasks_per_round: int) -> Round:
  """A host loop over one compiled client; every array stays on the device."""
  run = _client_on(alg)

  @jax.jit
  def sample(key):
    ids, keys = sample_tasks(key, num_tasks, tasks_per_round)
    return tuple(ids), tuple(keys)   # one device scalar per task, no host trip

  @jax.jit
  def start(shared, data, task_id, key):
    first = jax.eval_shape(run, shared, data, task_id, key)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                        (first.tree, first.metrics, first.weight))

  @jax.jit
  def accumulate(acc, shared, data, task_id, key):
    out = run(shared, data, task_id, key)
    # The third entry sums the weights themselves (weight x 1).
    return jax.tree.map(lambda a, x: a + out.weight * x, acc,
                        (out.tree, out.metrics, jnp.ones_like(out.weight)))

  @jax.jit
  def finish(state, acc):
    tree_sum, metric_sum, weight_sum = acc
    total = jnp.maximum(weight_sum, 1e-12)
    mean_tree = jax.tree.map(lambda x: (x / total).astype(x.dtype), tree_sum)
    return alg.server(state, mean_tree, jax.tree.map(lambda x: x / total, metric_sum))

  broadcast = jax.jit(alg.broadcast)

  def round_fn(state, data, key):
    ids, keys = sample(key)
    shared = broadcast(state)
    acc = start(shared, data, ids[0], keys[0])
    for task_id, task_key in zip(ids, keys):
      acc = accumulate(acc, shared, data, task_id, task_key)
    return finish(state, acc)

  programs = dict(sample=sample, broadcast=broadcast, start=start,
                  accumulate=accumulate, finish=finish)
  return Round(round_fn, 'loop', None, tasks_per_round, {'mapping': 'loop'}, programs)
