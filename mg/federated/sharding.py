"""Spreading a round's sampled tasks over every device with ``jax.sharding``.

One program uses every local device (and every host, after
``initialize_distributed``): the task axis of a round (the sampled tasks,
Algorithm 1 steps 2-4 of docs/design.md s.3) is sharded over a one-axis ``Mesh``
called ``clients``; the broadcast point, the server state and the task data
are replicated. JAX's SPMD partitioner turns the weighted mean over tasks into
per-device partial sums and one all-reduce; no communication is written by
hand.

The number of sampled tasks is padded up to a multiple of the device count
with dummy tasks of weight 0 (``padded_size``, ``task_valid``), so every
device gets the same number of tasks and the dummies change neither the mean
nor the metrics.

The data are placed once, replicated (``place``): tasks are sampled at random
every round, so any device may need any task; a replica on each device keeps
the gather of the sampled tasks local, and a round then moves nothing but the
all-reduced mean between devices and nothing through the host.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

CLIENTS = 'clients'


def client_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A one-axis ``Mesh`` named ``clients`` over ``devices`` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  return Mesh(np.array(devices), (CLIENTS,))


def round_mesh(shard_clients: bool) -> Optional[Mesh]:
  """The mesh a round shards its tasks over, or None on a single device.

  Args:
    shard_clients: ``config.meta.shard_clients``; False keeps every round on
      the default device.
  """
  if not shard_clients or jax.device_count() == 1:
    return None
  return client_mesh()


def num_shards(mesh: Optional[Mesh]) -> int:
  return 1 if mesh is None else int(mesh.shape[CLIENTS])


def padded_size(tasks_per_round: int, mesh: Optional[Mesh]) -> int:
  """``tasks_per_round`` rounded up to a multiple of the device count."""
  shards = num_shards(mesh)
  return shards * math.ceil(tasks_per_round / shards)


def task_valid(tasks_per_round: int, slots: int) -> jax.Array:
  """(slots,) float32: 1 for the sampled tasks, 0 for the padding dummies."""
  return (jnp.arange(slots) < tasks_per_round).astype(jnp.float32)


def pad_tasks(ids: jax.Array, keys: jax.Array, slots: int):
  """Pads sampled task ids and keys to ``slots`` with dummies (task 0).

  A dummy runs a real task's computation (so shapes and costs stay uniform)
  and is dropped by its zero weight (``task_valid``).
  """
  pad = slots - ids.shape[0]
  if pad == 0:
    return ids, keys
  ids = jnp.concatenate([ids, jnp.zeros((pad,), ids.dtype)])
  keys = jnp.concatenate([keys, jax.random.split(keys[0], pad)])
  return ids, keys


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def over_tasks(mesh: Mesh) -> NamedSharding:
  """Leading (task) axis split over the ``clients`` axis."""
  return NamedSharding(mesh, PartitionSpec(CLIENTS))


def shard_tasks(tree, mesh: Optional[Mesh]):
  """Inside ``jit``: constrains the leading (task) axis of ``tree`` to the mesh."""
  if mesh is None:
    return tree
  return jax.lax.with_sharding_constraint(tree, over_tasks(mesh))


def replicate(tree, mesh: Optional[Mesh]):
  """Inside ``jit``: constrains ``tree`` to be replicated on every device."""
  if mesh is None:
    return tree
  return jax.lax.with_sharding_constraint(tree, replicated(mesh))


def place(tree, mesh: Optional[Mesh] = None):
  """Puts ``tree`` (numpy or jax arrays) on the device(s) once.

  Without a mesh: the default device. With one: a replica on every device of
  the mesh; numpy leaves go through ``jax.make_array_from_callback`` so that
  every process of a multi-host run supplies its own (identical) copy.
  """
  if mesh is None:
    return jax.device_put(tree)
  sharding = replicated(mesh)

  def put(leaf):
    if isinstance(leaf, np.ndarray):
      return jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])
    return jax.device_put(leaf, sharding)

  return jax.tree.map(put, tree)


def initialize_distributed(config) -> bool:
  """Joins a multi-host run through ``jax.distributed.initialize``.

  Call it first thing, before any other JAX call, on every process
  (``mg.federated.backend.configure`` does). After it ``jax.devices()``
  lists every host's devices and ``round_mesh`` spans them all.

  Args:
    config: None, or a mapping (``config.distributed``) with ``enabled``
      (bool) and optional ``coordinator_address`` ('host:port'),
      ``num_processes``, ``process_id`` and ``local_device_ids``; fields left
      None are detected by JAX from the cluster environment (SLURM, Open MPI,
      Cloud TPU, Kubernetes).

  Returns:
    True when the process is (now) part of a distributed run.
  """
  if config is None or not config.get('enabled', False):
    return False
  if jax.distributed.is_initialized():
    return True
  fields = ('coordinator_address', 'num_processes', 'process_id', 'local_device_ids')
  kwargs = {f: config.get(f) for f in fields if config.get(f) is not None}
  jax.distributed.initialize(**kwargs)
  return True
