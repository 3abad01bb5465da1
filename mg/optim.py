"""Proximal and accelerated proximal steps as optax transforms (docs/design.md section 3).

Two ``optax.GradientTransformation`` factories carry the optimisation core of the
MetaGater outer loop (Algorithm 1, steps 8-9) and are reusable in any optax chain:

* ``proximal(prox, strength, learning_rate, mask=None)``: goes last in a chain and
  turns the chain's step into a proximal-gradient step (ISTA after ``optax.sgd``).
* ``accelerate(beta, eta=None, alpha=None, prox=None, strength=0.0, mask=None)``: the
  accelerated (proximal) gradient method of Ghadimi & Lan (2016).

Masks (both transforms): ``mask`` is a pytree of Python bools with the structure of
``params`` (or a prefix of it), or a callable of ``params`` returning one. The prox is
called on the selected subtree only -- ``params``' structure with every unselected leaf
replaced by ``optax.MaskedNode()`` -- so a group lasso groups the selected leaves alone;
unselected leaves take the plain (non-proximal) step. Any ``prox(tree, strength,
scaling) -> tree`` of the same structure may be used, or a name of ``mg.prox.get``.

Hyperparameters are numeric keyword arguments, so they may be traced (``jax.vmap``
over a sweep of ``beta`` or ``strength``) and ``optax.inject_hyperparams`` works.
``inject_hyperparams`` treats every callable argument as a schedule of its own 0-based
step, so list callables that are not such schedules in ``static_args``::

  tx = optax.inject_hyperparams(optim.accelerate, static_args=('prox', 'mask'))(
      beta=0.5, prox=prox.group_lasso, strength=1e-3, mask=gate_output_mask)

(or give ``prox`` by name, ``prox='group_lasso'``, and ``mask`` as a bool pytree).

References:
  Ghadimi & Lan, "Accelerated gradient methods for nonconvex nonlinear and stochastic
  programming", Mathematical Programming 156, 2016 (the AG method and its composite,
  proximal form; step-size policies).
  Beck & Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear
  inverse problems", SIAM J. Imaging Sciences, 2009 (ISTA, FISTA).
  Parikh & Boyd, "Proximal algorithms", Foundations and Trends in Optimization, 2014.
  MetaGater: Fast Learning of Conditional Channel Gated Networks via Federated
  Meta-Learning, Algorithm 1, steps 8-9.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple, Union

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mg import prox as prox_lib

PyTree = Any
Scalar = Any  # Python number or a (possibly traced) 0-d array.
ScalarOrSchedule = Union[Scalar, Callable[[jax.Array], Scalar]]
Mask = Union[PyTree, Callable[[PyTree], PyTree], None]


# ----------------------------------------------------------------------------
# Masks and the masked prox.


def _static_bool(flag: Any) -> bool:
  if isinstance(flag, (bool, np.bool_)):
    return bool(flag)
  if isinstance(flag, np.ndarray) and flag.shape == () and flag.dtype == bool:
    return bool(flag)
  raise TypeError(
      f'mask leaves must be static Python bools, got {type(flag).__name__} '
      f'{flag!r}. Build the mask from parameter paths or shapes, not values.')


def _full_mask(mask: Mask, params: PyTree) -> PyTree:
  """``mask`` resolved to one static bool per leaf of ``params`` (all True if None)."""
  if mask is None:
    return jax.tree.map(lambda _: True, params)
  tree = mask(params) if callable(mask) else mask

  def broadcast(flag, subtree):
    keep = _static_bool(flag)
    return jax.tree.map(lambda _: keep, subtree)

  try:
    return jax.tree.map(broadcast, tree, params)
  except ValueError as error:
    raise ValueError(
        'mask must be a pytree of bools with the structure of params (or a '
        f'prefix of it): {error}') from error


def _select(tree: PyTree, full_mask: PyTree) -> PyTree:
  return jax.tree.map(
      lambda keep, x: x if keep else optax.MaskedNode(), full_mask, tree)


def _masked_prox(prox: prox_lib.Prox, tree: PyTree, strength: Scalar,
                 scaling: Scalar, full_mask: PyTree) -> PyTree:
  """``prox`` applied to the selected leaves of ``tree`` only; others unchanged."""
  if not any(jax.tree.leaves(full_mask)):
    return tree
  selected = _select(tree, full_mask)
  result = prox(selected, strength, scaling=scaling)
  if jax.tree.structure(result) != jax.tree.structure(selected):
    raise ValueError(
        f'prox {getattr(prox, "__name__", prox)!r} changed the tree structure: '
        f'{jax.tree.structure(selected)} -> {jax.tree.structure(result)}.')

  def restore(y, x):
    if jnp.shape(y) != jnp.shape(x):
      raise ValueError(f'prox changed a leaf shape: {jnp.shape(x)} -> '
                       f'{jnp.shape(y)}.')
    return jnp.asarray(y).astype(x.dtype)

  result = jax.tree.map(restore, result, selected)
  return jax.tree.map(lambda keep, y, x: y if keep else x,
                      full_mask, result, tree)


# ----------------------------------------------------------------------------
# Argument handling.


def _require_params(params: PyTree, name: str) -> None:
  if params is None:
    raise ValueError(
        f'mg.optim.{name} needs the current parameters: call '
        f'`tx.update(grads, state, params)` (it reads params to form the '
        'proximal step).')


def _is_number(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_number(name: str, value: Any, *, positive: bool,
                  at_most_one: bool = False) -> None:
  """Range check for Python numbers; traced or array values are not checked."""
  if not _is_number(value):
    return
  if (value <= 0 if positive else value < 0) or (at_most_one and value > 1):
    bound = ('(0, 1]' if at_most_one else '> 0') if positive else '>= 0'
    raise ValueError(f'{name} must be {bound}, got {value}.')


def _value_at(value: ScalarOrSchedule, step: jax.Array) -> Scalar:
  return value(step) if callable(value) else value


def _cast(value: Scalar, like: jax.Array) -> jax.Array:
  return jnp.asarray(value).astype(like.dtype)


# ----------------------------------------------------------------------------
# proximal.


class ProximalState(NamedTuple):
  """State of ``proximal``."""
  count: chex.Array  # Updates done: the 0-based step of a learning-rate schedule.


def proximal(
    prox: prox_lib.Prox | str,
    strength: Scalar,
    learning_rate: ScalarOrSchedule,
    mask: Mask = None,
) -> optax.GradientTransformation:
  """Turns the step of a chain into a proximal step; goes last in a chain.

  With ``x = params``, ``u`` the incoming update and ``s`` the learning rate:

  .. math::

    u' = \\operatorname{prox}_{s \\lambda \\Omega}(x + u) - x,

  on the leaves selected by ``mask`` (``u`` passes through elsewhere). After
  ``optax.sgd(s)`` (``u = -s \\nabla f(x)``) this is ISTA, the proximal-gradient step
  of Beck & Teboulle (2009); after ``optax.adam`` it is a proximal Adam step whose
  zeros are exact. ``learning_rate`` must equal the step size of the chain before it.

  Example::

    tx = optax.chain(
        optax.adam(1e-3),
        mg.optim.proximal(mg.prox.group_lasso, 1e-2, 1e-3, mask=gate_output_mask))

  Args:
    prox: ``prox(tree, strength, scaling) -> tree`` (see ``mg.prox``) or its name.
    strength: regularisation weight ``lambda >= 0``.
    learning_rate: ``s``, a number or a schedule of the 0-based step count (the
      convention of optax's own schedules, so it matches ``optax.sgd(schedule)``).
    mask: bool pytree (or prefix, or callable of params) of the leaves to prox.

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` requires ``params``.
  """
  prox_fn = prox_lib.get(prox)
  _check_number('strength', strength, positive=False)
  _check_number('learning_rate', learning_rate, positive=False)

  def init_fn(params):
    del params
    return ProximalState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    _require_params(params, 'proximal')
    step_size = _value_at(learning_rate, state.count)
    full_mask = _full_mask(mask, params)
    candidate = jax.tree.map(lambda x, u: x + u, params, updates)
    proxed = _masked_prox(prox_fn, candidate, strength, step_size, full_mask)
    new_updates = jax.tree.map(
        lambda keep, y, x, u: (y - x).astype(u.dtype) if keep else u,
        full_mask, proxed, params, updates)
    return new_updates, ProximalState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------
# accelerate.


class AccelerateState(NamedTuple):
  """State of ``accelerate`` (docs/design.md section 3)."""
  count: chex.Array     # Rounds done, int32 (round t = count + 1 is next).
  x_prev: PyTree        # x_t: the sequence stepped with eta_t.
  x_ag: PyTree          # x^ag_t: the aggregated sequence, the output model.


def _default_alpha(t: jax.Array) -> jax.Array:
  return 2.0 / (t + 1.0)


def accelerate(
    beta: ScalarOrSchedule,
    eta: ScalarOrSchedule | None = None,
    alpha: ScalarOrSchedule | None = None,
    prox: prox_lib.Prox | str | None = None,
    strength: Scalar = 0.0,
    mask: Mask = None,
) -> optax.GradientTransformation:
  """Accelerated (proximal) gradient step of Ghadimi & Lan (2016).

  The outer loop of MetaGater (Algorithm 1, steps 8-9; docs/design.md section 3) on
  ``F + strength * Omega``. ``params`` passed to ``update`` is the point ``x_md``
  where the gradient ``G_t`` was taken; with round ``t = count + 1``:

  .. math::

    x_t &= \\operatorname{prox}_{\\eta_t \\lambda \\Omega}(x_{t-1} - \\eta_t G_t), \\\\
    x^{ag}_t &= \\operatorname{prox}_{\\beta_t \\lambda \\Omega}(x^{md}_t - \\beta_t G_t),
    \\\\
    x^{md}_{t+1} &= (1 - \\alpha_{t+1}) x^{ag}_t + \\alpha_{t+1} x_t,

  and the returned update is ``x^md_{t+1} - x^md_t``, so
  ``optax.apply_updates(params, update)`` is the next point at which to take a
  gradient. The prox acts on the ``mask``-selected leaves only (the gating ``phi``
  in MetaGater); the others take the plain steps. ``init(x_0)`` sets
  ``x_prev = x_ag = x_0``; start with ``params = x_0``, which is ``x^md_1`` because
  ``alpha_1 = 1`` under the default schedule. The output model is
  ``accelerated_params(state)`` (``x^ag``), not ``params``.

  Step sizes (numbers, or schedules of the 1-based round ``t``):

  * ``alpha_t = 2 / (t + 1)`` by default; ``alpha = 1`` gives proximal gradient
    descent with step ``eta``.
  * ``eta_t = beta_t`` by default, the end of Ghadimi & Lan's nonconvex range
    ``beta_t <= eta_t <= (1 + alpha_t / 4) beta_t``. Note that with
    ``eta_t = beta_t`` the three sequences coincide (``x_t = x^ag_t = x^md_t`` by
    induction from ``x_0``), so the method *is* proximal gradient descent with step
    ``beta``; the acceleration comes from ``eta_t > beta_t``. Their convex (and
    composite) policy ``eta_t = t * beta / 2`` with ``beta <= 1 / (2L)`` has the
    optimal ``O(1 / t^2)`` rate: ``accelerate(beta, eta=lambda t: t * beta / 2)``.

  Example (MetaGater outer loop; ``meta_gradient`` is ``lambda (x_md - mean z_i)``)::

    tx = mg.optim.accelerate(beta=0.5, prox=mg.prox.group_lasso, strength=1e-3,
                             mask=gate_output_mask)
    state = tx.init(x0)
    x_md = x0
    for _ in range(rounds):
      update, state = tx.update(meta_gradient(x_md), state, x_md)
      x_md = optax.apply_updates(x_md, update)
    meta_model = mg.optim.accelerated_params(state)

  Args:
    beta: ``beta_t > 0``, step of the aggregated sequence ``x_ag``.
    eta: ``eta_t > 0``, step of the ``x_prev`` sequence; ``None`` means ``beta``.
    alpha: ``alpha_t`` in ``(0, 1]``; ``None`` means ``2 / (t + 1)``.
    prox: ``prox(tree, strength, scaling) -> tree`` (see ``mg.prox``), its name, or
      ``None`` for the smooth method (Nesterov-type acceleration).
    strength: ``lambda >= 0``, the weight of ``Omega``.
    mask: bool pytree (or prefix, or callable of params) of the leaves to prox.

  Returns:
    An ``optax.GradientTransformation`` with ``AccelerateState``; ``update``
    requires ``params`` (= ``x_md``).
  """
  prox_fn = None if prox is None else prox_lib.get(prox)
  alpha_schedule = _default_alpha if alpha is None else alpha
  _check_number('beta', beta, positive=True)
  _check_number('eta', eta, positive=True)
  _check_number('alpha', alpha, positive=True, at_most_one=True)
  _check_number('strength', strength, positive=False)
  if prox_fn is None and _is_number(strength) and strength != 0:
    raise ValueError(f'strength={strength} has no effect without a prox; pass '
                     'prox=mg.prox.group_lasso (or another) as well.')

  def init_fn(params):
    # Separate buffers, so that callers may donate params and state together;
    # an explicit dtype drops weak types, so the state's types never change.
    copy = lambda tree: jax.tree.map(
        lambda x: jnp.array(x, dtype=jnp.result_type(x), copy=True), tree)
    return AccelerateState(count=jnp.zeros([], jnp.int32),
                           x_prev=copy(params), x_ag=copy(params))

  def proximal_step(x, grads, step_size, full_mask):
    stepped = jax.tree.map(lambda p, g: p - _cast(step_size, p) * g, x, grads)
    if prox_fn is None:
      return stepped
    return _masked_prox(prox_fn, stepped, strength, step_size, full_mask)

  def update_fn(updates, state, params=None):
    _require_params(params, 'accelerate')
    t = optax.safe_increment(state.count)
    beta_t = _value_at(beta, t)
    eta_t = beta_t if eta is None else _value_at(eta, t)
    alpha_next = _value_at(alpha_schedule, t + 1)
    full_mask = None if prox_fn is None else _full_mask(mask, params)
    x_prev = proximal_step(state.x_prev, updates, eta_t, full_mask)
    x_ag = proximal_step(params, updates, beta_t, full_mask)

    def step_to_next_md(ag, prev, md, g):
      a = _cast(alpha_next, ag)
      return ((1 - a) * ag + a * prev - md).astype(g.dtype)

    new_updates = jax.tree.map(step_to_next_md, x_ag, x_prev, params, updates)
    return new_updates, AccelerateState(count=t, x_prev=x_prev, x_ag=x_ag)

  return optax.GradientTransformation(init_fn, update_fn)


def accelerated_params(state: Any) -> PyTree:
  """The output model ``x_ag`` of ``accelerate`` (docs/design.md section 3, step 6).

  Args:
    state: an ``AccelerateState``, or any optimizer state holding exactly one
      (e.g. of ``optax.chain`` or ``optax.inject_hyperparams``).

  Raises:
    ValueError: ``state`` holds no ``AccelerateState`` or more than one.
  """
  is_state = lambda node: isinstance(node, AccelerateState)
  found = [node for node in jax.tree.leaves(state, is_leaf=is_state)
           if is_state(node)]
  if len(found) != 1:
    raise ValueError(
        f'expected one AccelerateState in the optimizer state, found {len(found)}.')
  return found[0].x_ag
