"""Per-FedAvg: personalised FedAvg through MAML, first-order and Hessian-free.

Fallah, Mokhtari, Ozdaglar. "Personalized Federated Learning with Theoretical
Guarantees: A Model-Agnostic Meta-Learning Approach", NeurIPS 2020.

Each local step draws independent batches ``D1, D2`` (and ``D3`` for HF):

    w' = w - a grad f(w; D1)
    FO:  w <- w - b grad f(w'; D2)
    HF:  w <- w - b (I - a H(w; D3)) grad f(w'; D2)

The Hessian-vector product is computed exactly by forward-over-reverse
differentiation (the paper approximates it by a finite difference; JAX gives
the exact product at the cost of about one more gradient). The server averages
the local models uniformly. At a target: one gradient step with step ``a``
of the adaptation config (docs/design.md s.5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mg.federated import server as server_lib
from mg.federated import local
from mg.federated.mapping import Algorithm, ClientOutput


def perfedavg(model, *, local_steps: int, batch_size: int, hessian_free: bool,
              tau: float = 1.0, scan_steps: bool = False) -> Algorithm:
  """Per-FedAvg (FO or HF) as pure functions; ``init(params, alpha=, beta=)``."""
  loss = server_lib.task_loss(model, tau)
  grad = jax.grad(loss)
  name = 'perfedavg_hf' if hessian_free else 'perfedavg_fo'

  def init(params, *, alpha, beta):
    return server_lib.init_state(params, alpha=alpha, beta=beta)

  def client(shared, task, key):
    w0, hp = shared
    a, b = hp['alpha'], hp['beta']

    def step(w, k):
      keys = jax.random.split(jax.random.fold_in(key, k), 6)
      batch1, batch2, batch3 = (local.sample_batch(task, keys[i], batch_size)
                                for i in range(3))
      inner = jax.tree.map(lambda p, g: p - a * g, w, grad(w, batch1, keys[3]))
      outer_loss, g = jax.value_and_grad(loss)(inner, batch2, keys[4])
      if hessian_free:
        _, hvp = jax.jvp(lambda p: grad(p, batch3, keys[5]), (w,), (g,))
        g = jax.tree.map(lambda gi, hi: gi - a * hi, g, hvp)
      return jax.tree.map(lambda p, gi: p - b * gi, w, g), outer_loss

    w, mean_loss = local.run_steps(step, w0, local_steps, scan_steps)
    return ClientOutput(w, jnp.ones(()), {'loss': mean_loss})

  def output(state):
    return state.params

  return Algorithm(name, init, server_lib.broadcast, client, server_lib.averaging_server, output)
