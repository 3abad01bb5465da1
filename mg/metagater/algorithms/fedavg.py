"""FedAvg: local SGD from the server model, sample-weighted averaging.

McMahan, Moore, Ramage, Hampson, Agüera y Arcas. "Communication-Efficient
Learning of Deep Networks from Decentralized Data", AISTATS 2017.

At a target node the output model is fine-tuned with one gradient step on the
support split (the MetaGater paper's protocol, docs/design.md s.5).
"""

from __future__ import annotations

import jax.numpy as jnp

from mg.federated import server as server_lib
from mg.federated import local
from mg.federated.mapping import Algorithm, ClientOutput


def fedavg(model, *, local_steps: int, batch_size: int, tau: float = 1.0,
           scan_steps: bool = False) -> Algorithm:
  """FedAvg as pure functions; ``init(params, local_lr=)``."""
  loss = server_lib.task_loss(model, tau)

  def init(params, *, local_lr):
    return server_lib.init_state(params, local_lr=local_lr)

  def client(shared, task, key):
    params, hp = shared
    z, task_loss = local.local_solve(
        loss, params, task, key, steps=local_steps, learning_rate=hp['local_lr'],
        lam=0.0, batch_size=batch_size, scan=scan_steps)
    return ClientOutput(z, task.count.astype(jnp.float32), {'loss': task_loss})

  def output(state):
    return state.params

  return Algorithm('fedavg', init, server_lib.broadcast, client, server_lib.averaging_server,
                   output)
