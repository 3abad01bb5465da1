"""Client-side pieces: task batches and the inexact local solve of problem (5).

MetaGater (Algorithm 1, step 5) has every sampled node solve

    z_i ~= argmin_z  L(z; D_i) + (lambda / 2) ||z - x_md||^2

by ``K`` steps of (minibatch) gradient descent started at ``z = x_md``
(docs/design.md s.3; Zhou et al., NeurIPS 2019, for the proximal meta-objective).
The task's data are padded arrays with a validity mask (``mg.data.TaskArrays``),
so one compiled function serves every task whatever its size.

Fused one-step solves. With ``K = 1`` every sampled node takes one gradient
step from the same broadcast point, and the proximal term has zero gradient
there, so the weighted mean of the nodes' solutions is itself one step:

    sum_i w_i z_i / W = x_md - eta * grad_x [ sum_i w_i L(x; B_i, key_i) / W ]

at ``x = x_md`` (``B_i``, ``key_i``: node ``i``'s minibatch and gate noise).
Differentiating the weighted mean of the vmapped per-task losses with the
parameters *shared* makes every convolution a plain one over ``tasks x
batch`` images, the fast path of every backend, where the vmapped per-task
gradients need grouped convolutions (docs/speed.md). ``fused_tasks`` is the
context in which ``local_solve`` computes that mean over all sampled tasks
(``mg.federated.mapping`` checks that the client passes it through unchanged,
so the result equals the per-task mapping's up to float rounding).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Callable

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
  Sampling with replacement keeps the shape static for every task size. Row
  ``i`` is ``bits_i mod count`` of one 32-bit draw per row (a single hash
  call, where ``jax.random.randint`` makes three): for tasks of ``n`` rows its
  bias is below ``n / 2**32`` (under 1e-6 for every dataset here).
  """
  if batch_size == 0:
    return task.x, task.y, task.mask
  count = jnp.maximum(task.count, 1).astype(jnp.uint32)
  idx = (jax.random.bits(key, (batch_size,), jnp.uint32) % count).astype(jnp.int32)
  weights = jnp.where(task.count > 0, 1.0, 0.0) * jnp.ones((batch_size,))
  return task.x[idx], task.y[idx], weights


def sample_batches(task, keys: jax.Array, batch_size: int):
  """``sample_batch`` for every key of ``keys`` (K,): (K, batch, ...) arrays.

  All of a local solve's minibatches in one hash call and one gather, where a
  draw per step costs a small program per step (what bounds an MLP's round on
  a CPU). ``None`` for full batch (every step reads the whole task).
  """
  if batch_size == 0:
    return None
  return jax.vmap(sample_batch, in_axes=(None, 0, None))(task, keys, batch_size)


def step_keys(key: jax.Array, steps: int) -> jax.Array:
  """(steps, 2) keys: local step ``k`` draws its minibatch with ``[k, 0]`` and
  its gate noise with ``[k, 1]``; one hash call for the whole solve."""
  return jax.random.split(key, (max(steps, 1), 2))


def local_solve(loss_fn: LossFn, x_md, task, key: jax.Array, *, steps: int,
                learning_rate, lam, batch_size: int, scan: bool = False):
  """``K = steps`` gradient steps on ``L(z; D_i) + lam/2 ||z - x_md||^2``.

  Args:
    loss_fn: ``loss_fn(params, batch, key) -> scalar`` (gate noise from ``key``).
    x_md: the point broadcast by the cloud; also the starting point.
    task: one task's ``TaskArrays`` slice.
    key: the task's PRNG key; step ``k`` uses ``step_keys(key, steps)[k]``.
    steps: ``K``; 0 returns ``x_md``.
    learning_rate: local step size (may be traced).
    lam: ``lambda`` of the proximal term (may be traced).
    batch_size: minibatch size, 0 for full batch.
    scan: run the steps in ``lax.scan`` (compact program) instead of unrolling
      them (fast convolutions on XLA:CPU, docs/speed.md).

  Returns:
    ``(z, mean_loss)``: the inexact solution and the mean data loss over steps.
    Inside ``fused_tasks`` (and for ``steps == 1``): the weighted means of
    both over the context's tasks (module docstring).
  """
  fused = _FUSED.get()
  if fused is not None:
    return fused.solve(loss_fn, x_md, task, key, steps=steps,
                       learning_rate=learning_rate, lam=lam, batch_size=batch_size)
  grad_fn = jax.value_and_grad(loss_fn)
  keys = step_keys(key, steps)
  batches = sample_batches(task, keys[:, 0], batch_size)

  def step(z, k):
    if batches is None:
      batch = (task.x, task.y, task.mask)
    else:
      batch = jax.tree.map(lambda a: a[k], batches)
    loss, grads = grad_fn(z, batch, keys[k, 1])
    z = jax.tree.map(
        lambda p, g, p0: p - learning_rate * (g + lam * (p - p0)), z, grads, x_md)
    return z, loss

  return run_steps(step, x_md, steps, scan)


def run_steps(step, carry, steps: int, scan: bool):
  """Applies ``carry, aux = step(carry, k)`` for ``k < steps``; mean of ``aux``.

  Unrolled in Python by default: on XLA:CPU a convolution inside a loop body
  runs ~25x slower (jax-ml/jax#12868); ``scan=True`` keeps the program small.

  Unrolled, a CNN-4 step runs slower than alone: the ``loop`` round is at 0.85
  of its single-step roofline at ``K = 5`` and 0.99 at ``K = 1`` (CIFAR-10
  shapes, 20 tasks, batch 64, ``experiments.bench``). Measured on the idle
  2-core CPU, in alternation in one process, five steps of batch 64: five
  separately dispatched jitted steps 186 ms, one unrolled program 201 ms; an
  ``optimization_barrier`` between the unrolled steps changes nothing (196 vs
  194 ms; the MLP vmapped over 5 tasks: 5.12 vs 5.10 ms), so none is placed.
  Dispatching each step from the host would win those 7% back at the price of
  splitting every algorithm's client into per-step programs; not built.
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


@dataclasses.dataclass
class FusedSolve:
  """The fused one-step solve of all sampled tasks (see ``fused_tasks``).

  Attributes:
    tasks: the sampled tasks' ``TaskArrays``, leading axis = task.
    keys: (T,) the tasks' PRNG keys (what each client would receive).
    weights: (T,) the clients' averaging weights; 0 for padding tasks.
    calls: one ``(arguments, outputs)`` record per ``local_solve`` call, for
      the caller's exactness check.
  """
  tasks: Any
  keys: jax.Array
  weights: jax.Array
  calls: list = dataclasses.field(default_factory=list)

  def solve(self, loss_fn, x_md, task, key, *, steps, learning_rate, lam,
            batch_size):
    del task  # every task of the context is solved at once
    arguments = dict(x_md=x_md, key=key, steps=steps, learning_rate=learning_rate,
                     lam=lam)
    if steps != 1:
      # Not one step from a shared point: no fused form. The caller refuses.
      outputs = (x_md, jnp.zeros(()))
      self.calls.append((arguments, outputs))
      return outputs

    def task_loss(params, task, task_key):
      keys = step_keys(task_key, 1)
      return loss_fn(params, sample_batch(task, keys[0, 0], batch_size), keys[0, 1])

    def mean_loss(params):
      # vmap *inside* the gradient with the parameters unbatched: plain
      # convolutions over tasks x batch rows, one weight gradient in total.
      losses = jax.vmap(task_loss, in_axes=(None, 0, 0))(params, self.tasks, self.keys)
      losses = jnp.where(self.weights > 0, losses, 0.0)
      return jnp.sum(self.weights * losses) / jnp.maximum(jnp.sum(self.weights), 1e-12)

    loss, grads = jax.value_and_grad(mean_loss)(x_md)
    # One step from x_md: the proximal term lam (z - x_md) is zero there.
    z = jax.tree.map(lambda p, g: p - learning_rate * g, x_md, grads)
    outputs = (z, loss)
    self.calls.append((arguments, outputs))
    return outputs


_FUSED: contextvars.ContextVar = contextvars.ContextVar('fused_solve', default=None)


@contextlib.contextmanager
def fused_tasks(tasks, keys: jax.Array, weights: jax.Array):
  """While active, ``local_solve`` returns the fused solve of all ``tasks``.

  Used at trace time by the ``fused`` client mapping; yields the
  ``FusedSolve`` whose ``calls`` record what the client asked for.
  """
  fused = FusedSolve(tasks, keys, weights)
  token = _FUSED.set(fused)
  try:
    yield fused
  finally:
    _FUSED.reset(token)
