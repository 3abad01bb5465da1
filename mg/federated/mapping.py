"""Mapping the sampled tasks' local solves onto the hardware, and one round.

A federated algorithm (fedjax style) is a set of pure functions:
``broadcast(state) -> shared`` (what the cloud sends), ``client(shared, task,
key) -> ClientOutput`` (one node's local work) and ``server(state, mean,
metrics) -> (state, diagnostics)`` (the cloud's update from the weighted mean
of the clients' trees). ``make_round`` composes them into
``round(state, data, key)``, sampling tasks without replacement inside the
compiled program (DESIGN.md s.3, Algorithm 1 steps 2-4).

Strategies for mapping the clients (DESIGN.md s.7 has the CPU measurements):
  * ``vmap``: one batched program over tasks. Best on GPU/TPU; on XLA:CPU the
    per-client convolutions become grouped convolutions (~5x slower).
  * ``unroll``: the tasks traced one after another inside one program:
    sequential plain convolutions (fast on XLA:CPU), compile time grows with
    the number of tasks.
  * ``scan``: ``lax.scan`` over tasks: small program, but convolutions in a
    loop body are ~25x slower on XLA:CPU (jax-ml/jax#12868).
  * ``loop``: a host loop over one compiled per-task function; compiles once
    whatever the number of tasks, at a dispatch per task.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from mg.federated import local

STRATEGIES = ('vmap', 'unroll', 'scan', 'loop')


class ClientOutput(NamedTuple):
  """What one node returns: a tree to average, its weight, scalar metrics."""
  tree: Any
  weight: jax.Array
  metrics: dict


class Algorithm(NamedTuple):
  """A federated algorithm as pure functions (see the module docstring)."""
  name: str
  init: Callable
  broadcast: Callable
  client: Callable
  server: Callable
  output: Callable


def default_strategy(backend: str, model_name: str) -> str:
  """The measured default: batched on accelerators, sequential convs on CPU."""
  if backend != 'cpu':
    return 'vmap'
  return 'vmap' if model_name == 'mlp' else 'unroll'


def resolve_strategy(strategy: str, model_name: str) -> str:
  if strategy == 'auto':
    return default_strategy(jax.default_backend(), model_name)
  if strategy not in STRATEGIES:
    raise ValueError(f'meta.mapping={strategy!r} is not one of '
                     f"{('auto',) + STRATEGIES}")
  return strategy


def _weighted_mean(trees, weights):
  """Mean over the leading axis of ``trees`` weighted by ``weights``."""
  total = jnp.maximum(jnp.sum(weights), 1e-12)
  return jax.tree.map(
      lambda t: jnp.tensordot(weights / total, t, axes=1).astype(t.dtype), trees)


def _client_on(alg: Algorithm):
  def run(shared, data, task_id, key):
    return alg.client(shared, local.task_slice(data, task_id), key)
  return run


def map_clients(alg: Algorithm, strategy: str):
  """``f(shared, data, ids, keys) -> (weighted mean tree, mean metrics)``.

  Traceable for every strategy but ``loop`` (see ``make_round``).
  """
  run = _client_on(alg)

  if strategy == 'vmap':
    def mapped(shared, data, ids, keys):
      out = jax.vmap(run, in_axes=(None, None, 0, 0))(shared, data, ids, keys)
      return (_weighted_mean(out.tree, out.weight),
              _weighted_mean(out.metrics, out.weight))
    return mapped

  if strategy == 'unroll':
    def mapped(shared, data, ids, keys):
      outs = [run(shared, data, ids[i], keys[i]) for i in range(ids.shape[0])]
      out = jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
      return (_weighted_mean(out.tree, out.weight),
              _weighted_mean(out.metrics, out.weight))
    return mapped

  if strategy == 'scan':
    def mapped(shared, data, ids, keys):
      def body(acc, inputs):
        out = run(shared, data, *inputs)
        acc = jax.tree.map(lambda a, x: a + out.weight * x, acc,
                           (out.tree, out.metrics, jnp.ones(())))
        return acc, None
      first = jax.eval_shape(run, shared, data, ids[0], keys[0])
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                           (first.tree, first.metrics, jnp.ones(())))
      (tree_sum, metric_sum, weight_sum), _ = jax.lax.scan(body, zeros, (ids, keys))
      total = jnp.maximum(weight_sum, 1e-12)
      return (jax.tree.map(lambda x: (x / total).astype(x.dtype), tree_sum),
              jax.tree.map(lambda x: x / total, metric_sum))
    return mapped

  raise ValueError(f'strategy {strategy!r} is not traceable; use make_round')


def sample_tasks(key: jax.Array, num_tasks: int, tasks_per_round: int):
  """Tasks without replacement and one key per sampled task (step 2)."""
  sample_key, client_key = jax.random.split(key)
  ids = jax.random.choice(sample_key, num_tasks, (tasks_per_round,), replace=False)
  return ids, jax.random.split(client_key, tasks_per_round)


def make_round(alg: Algorithm, *, num_tasks: int, tasks_per_round: int,
               strategy: str):
  """``round(state, data, key) -> (state, diagnostics)`` for one algorithm.

  ``data`` is the stacked ``TaskArrays`` of all meta-training tasks, already on
  the device; the sampled tasks are gathered by index inside the program.
  Every strategy but ``loop`` is one jitted function.
  """
  if strategy != 'loop':
    mapped = map_clients(alg, strategy)

    @jax.jit
    def round_fn(state, data, key):
      ids, keys = sample_tasks(key, num_tasks, tasks_per_round)
      mean_tree, metrics = mapped(alg.broadcast(state), data, ids, keys)
      return alg.server(state, mean_tree, metrics)

    return round_fn

  run = _client_on(alg)
  sample = jax.jit(sample_tasks, static_argnums=(1, 2))
  broadcast = jax.jit(alg.broadcast)
  server = jax.jit(alg.server)

  @jax.jit
  def accumulate(acc, shared, data, task_id, key):
    out = run(shared, data, task_id, key)
    return jax.tree.map(lambda a, x: a + out.weight * x, acc,
                        (out.tree, out.metrics, out.weight))

  @jax.jit
  def finish(acc):
    tree_sum, metric_sum, weight_sum = acc
    total = jnp.maximum(weight_sum, 1e-12)
    return (jax.tree.map(lambda x: (x / total).astype(x.dtype), tree_sum),
            jax.tree.map(lambda x: x / total, metric_sum))

  def round_fn(state, data, key):
    ids, keys = sample(key, num_tasks, tasks_per_round)
    shared = broadcast(state)
    first = jax.eval_shape(run, shared, data, ids[0], keys[0])
    acc = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                       (first.tree, first.metrics, first.weight))
    for i in range(tasks_per_round):
      acc = accumulate(acc, shared, data, ids[i], keys[i])
    mean_tree, metrics = finish(acc)
    return server(state, mean_tree, metrics)

  return round_fn
