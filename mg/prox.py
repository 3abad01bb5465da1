"""Proximal operators on pytrees (docs/design.md section 2; MetaGater Algorithm 1, steps 8-9).

Every operator here has the signature ``prox(params, strength, scaling=1.0)`` and returns

.. math::

  \\operatorname{prox}_{s \\lambda \\Omega}(x)
    = \\arg\\min_y \\tfrac12 \\|y - x\\|_2^2 + s \\, \\lambda \\, \\Omega(y),

with ``x = params``, ``lambda = strength`` and ``s = scaling`` (the step size of the
gradient step the prox follows, so that one proximal-gradient step with step ``s`` on
``f + lambda * Omega`` reads ``prox(x - s * grad f(x), lambda, scaling=s)``).

The operators are pure pytree maps: they keep the tree structure and the leaf dtypes,
work under ``jit``/``vmap``/``grad``, accept traced ``strength`` and ``scaling``, and skip
``optax.MaskedNode`` entries. A masked transform (``mg.optim.proximal``,
``mg.optim.accelerate``) therefore calls them on the selected subtree only, and
``group_lasso`` forms its groups from the selected leaves alone.

Regularisers (docs/design.md section 2, ``R(phi)`` of the meta-objective, eq. 4):

* ``lasso``: ``Omega(y) = ||y||_1`` (soft-thresholding).
* ``group_lasso``: ``Omega(y) = sum_c ||y_c||_2`` with one group per index ``c`` of the
  trailing axis, spanning every leaf. For a gate's output layer
  ``{'kernel': (16, C), 'bias': (C,)}`` group ``c`` is ``kernel[:, c]`` together with
  ``bias[c]``: a zero group gives gate logit 0 for every input, i.e. a channel that is
  structurally off.
* ``identity``: ``Omega = 0``.

Example (a proximal step on the gate outputs only, reused in any optax chain)::

  import optax
  from mg import optim, prox
  tx = optax.chain(
      optax.adam(1e-3),
      optim.proximal(prox.group_lasso, strength=1e-2, learning_rate=1e-3,
                     mask=gate_output_mask))

References:
  Parikh & Boyd, "Proximal algorithms", Foundations and Trends in Optimization, 2014
  (section 6.5: soft-thresholding and block soft-thresholding).
  Beck & Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear
  inverse problems", SIAM J. Imaging Sciences, 2009 (ISTA/FISTA).
  Yuan & Lin, "Model selection and estimation in regression with grouped
  variables", JRSS-B, 2006 (group lasso).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

PyTree = Any
Scalar = Any  # Python number or a (possibly traced) 0-d array.
Prox = Callable[..., PyTree]


def _threshold(strength: Scalar, scaling: Scalar) -> jax.Array:
  return jnp.asarray(scaling) * jnp.asarray(strength)


def _accumulation_dtype(dtype) -> jnp.dtype:
  # Low-precision leaves (bf16/f16) are summed in at least float32.
  return jnp.promote_types(dtype, jnp.float32)


def lasso(params: PyTree, strength: Scalar, scaling: Scalar = 1.0) -> PyTree:
  """Soft-thresholding: the prox of the l1 norm, leaf-wise.

  .. math::

    \\operatorname{prox}(x)_i = \\operatorname{sign}(x_i)
      \\max(|x_i| - s \\lambda, 0).

  Entries with ``|x_i| <= scaling * strength`` become exactly zero.

  Args:
    params: pytree of arrays (``optax.MaskedNode`` entries are left as they are).
    strength: ``lambda >= 0``, the l1 weight.
    scaling: ``s >= 0``, the step size multiplying ``strength``.

  Returns:
    A pytree like ``params`` (same structure, shapes and dtypes).
  """
  threshold = _threshold(strength, scaling)

  def soft_threshold(x):
    t = threshold.astype(x.dtype)
    # x - clip(x) is exactly 0 inside the threshold (no -0.0 or rounding residue).
    return x - jnp.clip(x, -t, t)

  return jax.tree.map(soft_threshold, params)


def lasso_penalty(params: PyTree) -> jax.Array:
  """``||params||_1`` summed over all leaves (the lasso ``Omega``)."""
  leaves = jax.tree.leaves(params)
  return sum((jnp.sum(jnp.abs(x).astype(_accumulation_dtype(x.dtype)))
              for x in leaves), jnp.zeros([], jnp.float32))


def _group_leaves(params: PyTree) -> list[jax.Array]:
  """Leaves of ``params`` after checking they share one trailing axis (the groups)."""
  leaves = jax.tree.leaves(params)
  with_paths = jax.tree_util.tree_leaves_with_path(params)
  for path, x in with_paths:
    if jnp.ndim(x) == 0:
      raise ValueError(
          'group lasso groups by the trailing axis, but the leaf at '
          f'{jax.tree_util.keystr(path)} is a scalar (shape ()). Exclude it with '
          'a mask, or give it a trailing axis.')
  sizes = {jax.tree_util.keystr(path): jnp.shape(x)[-1] for path, x in with_paths}
  if len(set(sizes.values())) > 1:
    raise ValueError(
        'group lasso needs every leaf to share the trailing axis (one group per '
        f'index), but the trailing sizes differ: {sizes}. Select leaves of one '
        'layer with a mask (e.g. only the gate output kernel and bias).')
  return leaves


def group_norms(params: PyTree) -> jax.Array:
  """Euclidean norm of each group ``c`` (trailing-axis index) across all leaves.

  .. math::

    \\|x_c\\|_2 = \\Big(\\sum_{\\text{leaves } \\ell} \\sum_{i}
      x^{(\\ell)}_{i, c}{}^2\\Big)^{1/2}.

  Args:
    params: pytree whose leaves all have the same trailing size ``C``
      (``optax.MaskedNode`` entries are skipped).

  Returns:
    A ``(C,)`` array in at least float32; shape ``(0,)`` if ``params`` has no leaves.

  Raises:
    ValueError: a leaf is a scalar or the trailing sizes differ.
  """
  leaves = _group_leaves(params)
  if not leaves:
    return jnp.zeros([0], jnp.float32)
  squares = [
      jnp.sum(jnp.square(x.astype(_accumulation_dtype(x.dtype))),
              axis=tuple(range(x.ndim - 1)))
      for x in leaves
  ]
  sum_sq = sum(squares[1:], squares[0])
  # sqrt at 0 has an infinite derivative; keep gradients finite through the prox.
  positive = sum_sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sum_sq, 1.0)), 0.0)


def group_lasso_penalty(params: PyTree) -> jax.Array:
  """``sum_c ||params_c||_2`` over trailing-axis groups (the group-lasso ``Omega``)."""
  return jnp.sum(group_norms(params))


def group_lasso(params: PyTree, strength: Scalar, scaling: Scalar = 1.0) -> PyTree:
  """Block soft-thresholding: the prox of the group lasso, groups on the trailing axis.

  Group ``c`` is the slice ``[..., c]`` of every leaf of ``params`` together
  (docs/design.md section 2). With ``t = scaling * strength``:

  .. math::

    \\operatorname{prox}(x)_c = \\max\\Big(0, 1 - \\frac{t}{\\|x_c\\|_2}\\Big) x_c,

  so a group whose norm is at most ``t`` becomes exactly zero (Parikh & Boyd 2014,
  section 6.5.4).

  Args:
    params: pytree of arrays of rank >= 1 sharing the trailing size ``C``;
      ``optax.MaskedNode`` entries are skipped (they belong to no group).
    strength: ``lambda >= 0``, the group-lasso weight.
    scaling: ``s >= 0``, the step size multiplying ``strength``.

  Returns:
    A pytree like ``params`` (same structure, shapes and dtypes).

  Raises:
    ValueError: a leaf is a scalar or the leaves' trailing sizes differ.
  """
  if not jax.tree.leaves(params):
    return params
  norms = group_norms(params)
  threshold = _threshold(strength, scaling).astype(norms.dtype)
  keep = norms > threshold
  factor = jnp.where(keep, 1.0 - threshold / jnp.where(keep, norms, 1.0), 0.0)
  return jax.tree.map(lambda x: x * factor.astype(x.dtype), params)


def identity(params: PyTree, strength: Scalar = 0.0, scaling: Scalar = 1.0) -> PyTree:
  """The prox of ``Omega = 0``: returns ``params`` unchanged."""
  del strength, scaling
  return params


_BY_NAME: dict[str, Prox] = {
    'lasso': lasso,
    'group_lasso': group_lasso,
    'identity': identity,
    'none': identity,
}


def get(name_or_prox: str | Prox) -> Prox:
  """The prox operator for a config name, or ``name_or_prox`` itself if callable.

  Names: ``'lasso'``, ``'group_lasso'``, ``'identity'`` and its alias ``'none'``
  (docs/design.md section 2: "group lasso (default) / lasso / none"). Passing a name
  instead of a function also lets ``optax.inject_hyperparams`` wrap a transform
  without listing ``prox`` in ``static_args``.

  Raises:
    ValueError: unknown name.
  """
  if callable(name_or_prox):
    return name_or_prox
  try:
    return _BY_NAME[name_or_prox]
  except (KeyError, TypeError):
    raise ValueError(
        f'unknown prox {name_or_prox!r}; expected a callable '
        f'prox(params, strength, scaling) or one of {sorted(_BY_NAME)}.') from None
