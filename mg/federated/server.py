"""Pieces every federated algorithm of either system shares: the server state, a task loss,
finiteness and norms of parameter trees, and plain averaging."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mg import data


class ServerState(NamedTuple):
  """The cloud's state: the broadcast point, optimizer state, hyperparameters.

  Hyperparameters live in the state as arrays (not in closures) so one compiled
  round serves any value, and a sweep can ``vmap`` over them (issue: sweeps).
  """
  params: Any
  opt_state: Any
  hparams: dict
  round: jax.Array


def as_hparams(**values) -> dict:
  """Float32 scalar arrays, the form hyperparameters take in a state."""
  return {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}


def task_loss(model, tau: float):
  """``loss(params, batch, key)``: masked cross-entropy with training gates.

  Gates (if any) use straight-through Gumbel noise from ``key`` (docs/design.md s.1),
  the training mode of the local solves.
  """
  def loss(params, batch, key):
    x, y, w = batch
    logits, _ = model.apply(params, x, key=key, deterministic=False, tau=tau)
    return data.masked_mean(optax.softmax_cross_entropy_with_integer_labels(logits, y), w)
  return loss


def tree_norm(tree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.zeros(())
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves))


def all_finite(tree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def broadcast(state: ServerState):
  """What the cloud sends every sampled node: the model and the hyperparameters."""
  return state.params, state.hparams


def averaging_server(state: ServerState, mean_params, metrics):
  """The server of averaging methods: the new model is the clients' mean."""
  diagnostics = dict(metrics, finite=all_finite(mean_params))
  return state._replace(params=mean_params, round=state.round + 1), diagnostics


def init_state(params, opt_state=(), **hparams) -> ServerState:
  """A round-0 ``ServerState`` with float32 hyperparameters."""
  return ServerState(params, opt_state, as_hparams(**hparams), jnp.zeros((), jnp.int32))
