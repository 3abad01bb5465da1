"""MetaGater: accelerated proximal federated meta-learning (Algorithm 1).

Lin, Yang, Lin, Zhang, Tang, Tong, Zhang. "MetaGater: Fast Learning of
Conditional Channel Gated Networks via Federated Meta-Learning", IEEE MASS 2021.

Each round (docs/design.md s.3): the cloud sends ``x_md``; each sampled node solves
its proximal local problem (5) inexactly (``mg.federated.local.local_solve``);
the cloud forms the meta-gradient ``G_t = lambda * (x_md - mean_i z_i)``
(Zhou et al., NeurIPS 2019: the gradient of the Moreau envelope, no Hessian)
and takes the accelerated step of Ghadimi & Lan (2016): plain accelerated
gradient on the backbone ``theta`` (step 8), accelerated *proximal* gradient
with the group-lasso (or lasso) prox on the gating module ``phi`` (step 9).
The output model is the aggregated iterate ``x_ag``.

With ``gating=False`` (a model without gates) this is "MetaGater w/o gating".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mg import models
from mg import optim
from mg import prox as prox_lib
from mg.federated import server as server_lib
from mg.federated import local
from mg.federated.mapping import Algorithm, ClientOutput


def gating_prox(regularizer: str):
  """The prox of ``R(phi)`` applied per gated layer's output group (eq. 4).

  The accelerate transform hands over only the gate-output leaves
  (``phi/<layer>/out``); each layer's ``{'kernel', 'bias'}`` pair is one
  group-lasso block family (column ``c`` of ``W2`` with ``b2[c]``).
  """
  if regularizer == 'none':
    return None
  if regularizer == 'lasso':
    return prox_lib.lasso
  if regularizer != 'group_lasso':
    raise ValueError(f'meta.regularizer={regularizer!r}: expected group_lasso, '
                     'lasso or none')

  def per_layer(tree, strength, scaling=1.0):
    phi = {layer: dict(sub, out=prox_lib.group_lasso(sub['out'], strength, scaling))
           for layer, sub in tree['phi'].items()}
    return dict(tree, phi=phi)

  return per_layer


ETA_SCHEDULES = ('beta', 'nonconvex', 'convex')


def eta_schedule(name: str):
  """``eta_t`` of Ghadimi & Lan (2016) as ``f(t, beta_t)``, by name.

  * ``beta``: ``eta_t = beta_t``. Then ``x_prev = x_ag = x_md`` at every round
    and the scheme *is* proximal gradient descent: no acceleration.
  * ``nonconvex``: ``eta_t = (1 + alpha_t / 4) beta_t``, the top of their
    nonconvex range (``alpha_t = 2 / (t + 1)``).
  * ``convex``: ``eta_t = t beta_t / 2``, their convex (composite) policy with the
    ``O(1/t^2)`` rate; Nesterov-type momentum.
  """
  if name == 'beta':
    return lambda t, beta: beta
  if name == 'nonconvex':
    return lambda t, beta: (1.0 + 0.5 / (t + 1.0)) * beta
  if name == 'convex':
    return lambda t, beta: t * beta / 2.0
  raise ValueError(f'meta.eta={name!r}: expected one of {ETA_SCHEDULES}')


def metagater(model, *, local_steps: int, batch_size: int, tau: float,
              regularizer: str = 'group_lasso', alpha=None,
              eta: str = 'convex', scan_steps: bool = False,
              name: str = 'metagater') -> Algorithm:
  """Algorithm 1 as pure functions; hyperparameters travel in the state.

  Args:
    model: an ``mg.models.Model`` (with or without gates).
    local_steps: ``K`` steps of the local solve.
    batch_size: local minibatch, 0 for full batch.
    tau: Gumbel-softmax temperature.
    regularizer: ``R(phi)``: 'group_lasso', 'lasso' or 'none'.
    alpha: ``None`` for ``alpha_t = 2/(t+1)``; 1.0 gives plain proximal
      gradient descent on ``F + R`` (the unaccelerated comparison).
    eta: the ``eta_t`` policy (``eta_schedule``).
    scan_steps: scan the local steps instead of unrolling them.
    name: the method name reported.

  Returns:
    An ``Algorithm``; ``init(params, lam=, local_lr=, beta=, rho=)``.
  """
  loss = server_lib.task_loss(model, tau)
  has_gates = bool(model.gated_layers)
  prox = gating_prox(regularizer) if has_gates else None
  eta_fn = eta_schedule(eta)

  def transform(hp):
    # Built from the state's (possibly traced) hyperparameters at every step, so
    # one compiled round serves any beta / rho and sweeps can vmap over them.
    return optim.accelerate(
        beta=hp['beta'], eta=lambda t: eta_fn(t, hp['beta']), alpha=alpha,
        prox=prox, strength=hp['rho'] if prox is not None else 0.0,
        mask=models.gate_output_mask if prox is not None else None)

  def init(params, *, lam, local_lr, beta, rho=0.0):
    hparams = server_lib.as_hparams(lam=lam, local_lr=local_lr, beta=beta, rho=rho)
    return server_lib.init_state(params, transform(hparams).init(params), **hparams)

  def client(shared, task, key):
    x_md, hp = shared
    z, task_loss = local.local_solve(
        loss, x_md, task, key, steps=local_steps, learning_rate=hp['local_lr'],
        lam=hp['lam'], batch_size=batch_size, scan=scan_steps)
    return ClientOutput(z, jnp.ones(()), {'loss': task_loss})

  def server(state, mean_z, metrics):
    x_md = state.params
    grad = jax.tree.map(lambda x, z: state.hparams['lam'] * (x - z), x_md, mean_z)
    updates, opt_state = transform(state.hparams).update(grad, state.opt_state, x_md)
    params = optax.apply_updates(x_md, updates)
    diagnostics = dict(metrics, meta_grad_norm=server_lib.tree_norm(grad),
                       finite=server_lib.all_finite(params))
    if has_gates:
      diagnostics['zero_gate_groups'] = zero_groups(optim.accelerated_params(opt_state))
    return (server_lib.ServerState(params, opt_state, state.hparams, state.round + 1),
            diagnostics)

  def output(state):
    return optim.accelerated_params(state.opt_state)

  return Algorithm(name, init, server_lib.broadcast, client, server, output)


def zero_groups(params) -> jax.Array:
  """Fraction of gate-output groups that are exactly zero (channels off for all inputs)."""
  counts = [(jnp.sum(jnp.all(sub['out']['kernel'] == 0, axis=0)
                     & (sub['out']['bias'] == 0)), sub['out']['bias'].shape[0])
            for sub in params['phi'].values()]
  return sum(c for c, _ in counts) / sum(n for _, n in counts)
