"""Client-side pieces: task batches and the inexact local solve of problem (5).

MetaGater (Algorithm 1, step 5) has every sampled node solve

    z_i ~= argmin_z  L(z; D_i) + (lambda / 2) ||z - x_md||^2

by ``K`` steps of (minibatch) gradient descent started at ``z = x_md``
(DESIGN.md s.3; Zhou et al., NeurIPS 2019, for the proximal meta-objective).
The task's data are padded arrays with a validity mask (``mg.data.TaskArrays``),
so one compiled function serves every task whatever its size.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Batch = tuple[jax.Array, jax.Array, jax.Array]  # images, labels, 0/1 weights
LossFn = Callable[..., jax.Array]


def task_slice(data, task_id):
  """One task's padded arrays out of a stacked ``TaskArrays`` (jit-safe gather)."""
  return jax.tree.map(lambda a: a[task_id], data)


def sample_batch(task, key: jax.Array, batch_size: int) -> Batch:
  """A minibatch drawn uniformly (with replacement) from a task's real rows.

  ``batch_size == 0`` returns the whole padded task with its mask (full batch).
  Sampling with replacement keeps the shape static for every task size.
  """
  if batch_size == 0:
    return task.x, task.y, task.mask
  idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(task.count, 1))
  weights = jnp.where(task.count > 0, 1.0, 0.0) * jnp.ones((batch_size,))
  return task.x[idx], task.y[idx], weights


def local_solve(loss_fn: LossFn, x_md, task, key: jax.Array, *, steps: int,
                learning_rate, lam, batch_size: int, scan: bool = False):
  """``K = steps`` gradient steps on ``L(z; D_i) + lam/2 ||z - x_md||^2``.

  Args:
    loss_fn: ``loss_fn(params, batch, key) -> scalar`` (gate noise from ``key``).
    x_md: the point broadcast by the cloud; also the starting point.
    task: one task's ``TaskArrays`` slice.
    key: the task's PRNG key; step ``k`` uses ``fold_in(key, k)``.
    steps: ``K``; 0 returns ``x_md``.
    learning_rate: local step size (may be traced).
    lam: ``lambda`` of the proximal term (may be traced).
    batch_size: minibatch size, 0 for full batch.
    scan: run the steps in ``lax.scan`` (compact program) instead of unrolling
      them (fast convolutions on XLA:CPU, DESIGN.md s.7).

  Returns:
    ``(z, mean_loss)``: the inexact solution and the mean data loss over steps.
  """
  grad_fn = jax.value_and_grad(loss_fn)

  def step(z, k):
    step_key = jax.random.fold_in(key, k)
    batch = sample_batch(task, jax.random.fold_in(step_key, 1), batch_size)
    loss, grads = grad_fn(z, batch, jax.random.fold_in(step_key, 2))
    z = jax.tree.map(
        lambda p, g, p0: p - learning_rate * (g + lam * (p - p0)), z, grads, x_md)
    return z, loss

  return run_steps(step, x_md, steps, scan)


def run_steps(step, carry, steps: int, scan: bool):
  """Applies ``carry, aux = step(carry, k)`` for ``k < steps``; mean of ``aux``.

  Unrolled in Python by default: on XLA:CPU a convolution inside a loop body
  runs ~25x slower (jax-ml/jax#12868); ``scan=True`` keeps the program small.
  """
  if steps == 0:
    return carry, jnp.zeros(())
  if scan:
    carry, aux = jax.lax.scan(step, carry, jnp.arange(steps))
    return carry, jnp.mean(aux)
  total = jnp.zeros(())
  for k in range(steps):
    carry, aux = step(carry, k)
    total = total + aux
  return carry, total / steps
