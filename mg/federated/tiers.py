"""A round of clients in budget tiers: broadcast per tier, clients mapped, one server step.

The round of the early-exit algorithms (ReeFL and its baselines,
docs/design.md s.9-13): each sampled client trains the part of the model its
tier holds and the server aggregates over the clients that hold each entry
(:mod:`mg.federated.aggregation`). An algorithm is
:class:`mg.federated.mapping.Algorithm`'s pure functions, ``broadcast(state,
tier)``, ``client(shared, data, images, labels, key, round_)`` and
``server(state, outputs)``, with ``client_batch`` for the batched mapping:
the same client over a group of same-tier clients, its program vmapped over
them with the tier unbatched (so the blocks after the tier's exit stay skipped).

Mappings (``MAPPINGS``), as MetaGater's (:mod:`mg.federated.mapping`):

* ``loop``: one compiled per-client program, called once per client (a host
  loop). The outputs stay on the device until the server has them.
* ``vmap``: the sampled clients grouped by tier, each group cut into chunks
  of ``group_size`` clients; a chunk short of it is padded with clients of no
  examples (no steps, dropped before the server). One program per chunk size,
  however many clients of each tier a round samples.

With several devices (``fl.shard_clients``) the ``vmap`` mapping shards each
chunk over a ``clients`` mesh axis (:mod:`mg.federated.sharding`): a chunk is
padded to a multiple of the device count and its keys are placed split over
the devices, so JAX's SPMD partitioner runs each device's clients there; the
parameters and the data are replicated, and the server gathers the outputs.

``auto`` is ``loop`` on XLA:CPU: for the ViT, vmapping 2-3 same-tier clients
ran at 0.95-1.10x the loop, two clients traced in one program at 0.99-1.06x,
and the batched program compiles longer (docs/speed.md, "Mapping clients on
this CPU"). Elsewhere ``vmap``, where batching is what accelerators are for
(not measured here: no accelerator was available).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from mg.federated import sharding

MAPPINGS = ('loop', 'vmap')


def resolve_mapping(mapping: str, backend: str | None = None) -> str:
  """``mapping`` with ``auto`` replaced by the measured choice (module docstring)."""
  if mapping == 'auto':
    return 'loop' if (backend or jax.default_backend()) == 'cpu' else 'vmap'
  if mapping not in MAPPINGS:
    raise ValueError(f'mapping={mapping!r}: expected auto or one of {MAPPINGS}')
  return mapping


def default_group_size(clients_per_round: int, num_tiers: int) -> int:
  """Clients per batched chunk: a round's clients over the tiers, rounded up."""
  return max(1, math.ceil(clients_per_round / num_tiers))


def chunks(sampled, tiers, group_size: int) -> list[tuple[int, list[int]]]:
  """``[(tier, [client ids])]``: the sampled clients by tier, in chunks of ``group_size``."""
  by_tier: dict[int, list[int]] = {}
  for cid in sampled:
    by_tier.setdefault(int(tiers[int(cid)]), []).append(int(cid))
  return [(t, ids[i:i + group_size]) for t, ids in sorted(by_tier.items())
          for i in range(0, len(ids), group_size)]


@functools.partial(jax.jit, static_argnums=1)
def split_rows(tree, n: int) -> list:
  """A tree with a leading axis -> its first ``n`` rows, one tree each."""
  return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(n)]


def stack_data(data: list):
  """Clients' ``ClientData`` (index, count, ...) stacked field by field (tier and id as given)."""
  return data[0]._replace(index=jnp.stack([d.index for d in data]),
                          count=jnp.stack([jnp.asarray(d.count) for d in data]))


def round_step(alg, state, clients: list, images, labels, sampled, key: jax.Array,
               round_: int, mapping: str = 'loop', group_size: int = 1, mesh=None):
  """:func:`train_round` without reading anything back: ``(state, diagnostics, metrics)``.

  ``metrics``: each sampled client's (in ``sampled``'s order), on the device.
  Traceable in the algorithm's hyperparameters, so :func:`train_members`
  vmaps it over a sweep's members.
  """
  shared = {}

  def shared_of(tier):
    if tier not in shared:
      shared[tier] = alg.broadcast(state, tier)
    return shared[tier]

  keys = {int(c): jax.random.fold_in(key, int(c)) for c in sampled}
  outputs = {}
  if mapping == 'loop':
    for cid in sampled:
      data = clients[int(cid)]
      outputs[int(cid)] = alg.client(shared_of(data.tier), data, images, labels,
                                     keys[int(cid)], round_)
  elif mapping == 'vmap':
    slots = sharding.padded_size(group_size, mesh)  # a multiple of the devices
    for tier, ids in chunks(sampled, [c.tier for c in clients], group_size):
      pad = slots - len(ids)
      data = [clients[i] for i in ids] + [clients[ids[0]]._replace(count=jnp.int32(0))] * pad
      chunk_keys = jnp.stack([keys[i] for i in ids] + [keys[ids[0]]] * pad)
      if mesh is not None:  # the batched program is partitioned along the clients' keys
        chunk_keys = jax.device_put(chunk_keys, sharding.over_tasks(mesh))
      batch = alg.client_batch(shared_of(tier), data, images, labels, chunk_keys, round_)
      outputs.update(zip(ids, batch))
  else:
    raise ValueError(f'mapping={mapping!r}: expected one of {MAPPINGS}')
  ordered = [outputs[int(c)] for c in sampled]
  state, diag = alg.server(state, ordered)
  return state, diag, [o.metrics for o in ordered]


_READ = ('loss', 'teacher', 'tier')  # what the host reads of a client's metrics


def summary(diag: dict, metrics: list) -> dict:
  """A round's diagnostics on the host: mean local loss, ``finite``, teachers by tier."""
  metrics = jax.device_get([{k: m[k] for k in _READ if k in m} for m in metrics])
  teacher: dict[int, np.ndarray] = {}
  for m in metrics:
    if 'teacher' in m:
      t = int(m['tier'])
      teacher[t] = teacher.get(t, 0) + np.asarray(m['teacher'])[:t + 1]
  return dict(diag, loss=float(np.mean([float(m['loss']) for m in metrics])),
              finite=bool(diag['finite']), uploaded=int(diag['uploaded']), teacher=teacher)


def train_round(alg, state, clients: list, images, labels, sampled, key: jax.Array,
                round_: int, mapping: str = 'loop', group_size: int = 1, mesh=None):
  """One round: broadcast to each sampled client's tier, local training, aggregation.

  Args:
    alg: the algorithm (module docstring); ``client_batch`` needed for ``vmap``.
    clients: every client's ``ClientData`` (``tier`` and ``cid`` fields).
    sampled: the round's client ids; each trains with ``fold_in(key, id)``.
    mapping: ``loop`` or ``vmap`` (resolved: :func:`resolve_mapping`).
    mesh: with ``vmap``, a ``clients`` mesh (:func:`mg.federated.sharding.round_mesh`)
      to shard each chunk over (module docstring), or None.

  Returns:
    ``(state, diagnostics)``; diagnostics hold the mean local loss, the
    uploaded parameter count, ``finite`` and ``teacher``: ``{tier: counts of
    its exits}`` where the algorithm reports its clients' teachers. Only these
    scalars come back to the host.
  """
  state, diag, metrics = round_step(alg, state, clients, images, labels, sampled, key,
                                    round_, mapping, group_size, mesh)
  return state, summary(diag, metrics)


def train_members(algorithm_of, states, settings: dict, clients: list, images, labels,
                  sampled, key: jax.Array, round_: int, mapping: str = 'loop',
                  group_size: int = 1, mesh=None):
  """One round of a sweep's members as one batched computation (``--members=vmap``).

  The members share the clients, data, sampled clients and keys (one seed)
  and differ only in ``settings``: ``{name: (M,) values}`` of the settings the
  algorithm traces (learning rates, KD weights, temperatures), from which
  ``algorithm_of(settings)`` builds a member's algorithm. ``states``: the
  members' server states stacked on a leading axis. :func:`round_step` is
  vmapped over the members: every compiled program of the round (local
  training, broadcast, server rule) runs once for all M, batched.

  Returns:
    ``(states, [diagnostics per member])`` as :func:`train_round`'s.
  """
  def member(state, values):
    state, diag, metrics = round_step(algorithm_of(values), state, clients, images, labels,
                                      sampled, key, round_, mapping, group_size, mesh)
    return state, diag, [{k: m[k] for k in _READ if k in m} for m in metrics]

  states, diag, metrics = jax.vmap(member)(states, settings)
  diag, metrics = jax.device_get((diag, metrics))
  size = len(next(iter(settings.values())))
  row = lambda tree, m: jax.tree.map(lambda x: x[m], tree)
  return states, [summary(row(diag, m), row(metrics, m)) for m in range(size)]
