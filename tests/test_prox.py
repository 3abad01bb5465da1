"""Known-answer tests of mg.prox (docs/design.md section 2; Parikh & Boyd 2014, s.6.5)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mg.prox


@functools.partial(jax.jit, static_argnums=0)
def _jit_prox(prox, params, strength, scaling):
  return prox(params, strength, scaling=scaling)


def test_lasso_soft_thresholds_by_hand():
  x = jnp.array([3.0, -0.5, 1.0, -2.0, 0.0])
  # threshold = scaling * strength = 0.5 * 2.0 = 1.0.
  y = _jit_prox(mg.prox.lasso, x, 2.0, 0.5)
  np.testing.assert_array_equal(y, [2.0, 0.0, 0.0, -1.0, 0.0])
  # |x| <= threshold gives an exact +0.0, not a tiny residue or -0.0.
  assert not np.any(np.signbit(np.asarray(y)[[1, 2, 4]]))


def test_lasso_is_leafwise_over_a_pytree():
  tree = {'a': jnp.array([[1.5, -0.2]]), 'b': (jnp.array([-4.0]),)}
  y = _jit_prox(mg.prox.lasso, tree, 0.5, 1.0)
  chex.assert_trees_all_equal(
      y, {'a': jnp.array([[1.0, 0.0]]), 'b': (jnp.array([-3.5]),)})


def test_group_lasso_single_leaf_by_hand():
  # Columns are groups: norms 5, 0.5, 0.
  kernel = jnp.array([[3.0, 0.3, 0.0],
                      [4.0, 0.4, 0.0]])
  y = _jit_prox(mg.prox.group_lasso, kernel, 1.0, 1.0)
  # Column 0 scaled by 1 - 1/5; columns 1 (norm 0.5 < 1) and 2 exactly zero.
  np.testing.assert_allclose(y[:, 0], [2.4, 3.2], rtol=1e-6)
  np.testing.assert_array_equal(y[:, 1:], 0.0)


def test_group_lasso_groups_span_kernel_column_and_bias():
  layer = {'kernel': jnp.array([[1.0, 0.5],
                                [2.0, 0.5]]),
           'bias': jnp.array([2.0, 0.5])}
  # Group 0 = (1, 2, 2): norm 3 -> factor 1 - 1.5/3 = 0.5.
  # Group 1 = (0.5, 0.5, 0.5): norm 0.866 < 1.5 -> exactly zero.
  y = _jit_prox(mg.prox.group_lasso, layer, 3.0, 0.5)
  chex.assert_trees_all_close(
      y, {'kernel': jnp.array([[0.5, 0.0], [1.0, 0.0]]),
          'bias': jnp.array([1.0, 0.0])}, rtol=1e-6)
  np.testing.assert_array_equal(y['kernel'][:, 1], 0.0)
  assert y['bias'][1] == 0.0
  np.testing.assert_allclose(mg.prox.group_norms(layer), [3.0, np.sqrt(0.75)],
                             rtol=1e-6)


def test_group_lasso_on_masked_subtree_groups_selected_leaves_only():
  tree = {
      'out': {'kernel': jnp.array([[3.0, 0.1]]), 'bias': jnp.array([4.0, 0.1])},
      'hidden': {'kernel': jnp.ones((2, 7))},  # Other trailing size: unselected.
  }
  selected = {'out': tree['out'], 'hidden': {'kernel': optax.MaskedNode()}}
  y = _jit_prox(mg.prox.group_lasso, selected, 2.5, 1.0)
  assert isinstance(y['hidden']['kernel'], optax.MaskedNode)
  # Group 0 = (3, 4): norm 5 -> factor 0.5; group 1: norm 0.14 -> zero.
  chex.assert_trees_all_close(
      y['out'], {'kernel': jnp.array([[1.5, 0.0]]), 'bias': jnp.array([2.0, 0.0])},
      rtol=1e-6)
  with pytest.raises(ValueError, match='trailing'):
    mg.prox.group_lasso(tree, 2.5)
  nothing_selected = {'hidden': optax.MaskedNode()}
  assert mg.prox.group_lasso(nothing_selected, 2.5) == nothing_selected


def test_group_lasso_rejects_scalar_leaf():
  with pytest.raises(ValueError, match='scalar'):
    mg.prox.group_lasso({'w': jnp.ones((3,)), 's': jnp.float32(1.0)}, 0.1)


@pytest.mark.parametrize('prox', [mg.prox.lasso, mg.prox.group_lasso,
                                  mg.prox.identity])
def test_zero_strength_is_identity(prox):
  tree = {'kernel': jax.random.normal(jax.random.key(0), (4, 3)),
          'bias': jax.random.normal(jax.random.key(1), (3,))}
  chex.assert_trees_all_equal(_jit_prox(prox, tree, 0.0, 0.7), tree)


@pytest.mark.parametrize('prox', [mg.prox.lasso, mg.prox.group_lasso])
def test_keeps_dtype_and_structure(prox):
  tree = {'k': jnp.array([[0.5, -2.0]], jnp.bfloat16),
          'b': jnp.array([1.0, 3.0], jnp.float16)}
  y = _jit_prox(prox, tree, jnp.float32(0.25), 1.0)
  chex.assert_trees_all_equal_dtypes(y, tree)
  chex.assert_trees_all_equal_shapes(y, tree)


@pytest.mark.parametrize('prox, penalty', [
    (mg.prox.lasso, mg.prox.lasso_penalty),
    (mg.prox.group_lasso, mg.prox.group_lasso_penalty),
])
def test_prox_is_the_minimiser(prox, penalty):
  """h(y) = 1/2||y - x||^2 + s*l*Omega(y) is 1-strongly convex, minimised at prox(x):

  so h(y + d) >= h(y) + ||d||^2 / 2 for every d (a strict optimality certificate).
  """
  column_scale = jnp.linspace(0.02, 0.6, 6)  # Small groups get zeroed.
  x = {'kernel': column_scale * jax.random.normal(jax.random.key(2), (5, 6)),
       'bias': column_scale * jax.random.normal(jax.random.key(3), (6,))}
  strength, scaling = 0.8, 0.5

  def objective(y):
    dist = sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(y),
                                                     jax.tree.leaves(x)))
    return 0.5 * dist + scaling * strength * penalty(y)

  y = _jit_prox(prox, x, strength, scaling)
  leaves = jax.tree.leaves(y)
  assert any(np.any(leaf == 0) for leaf in leaves)  # The test covers kinks
  assert any(np.any(leaf != 0) for leaf in leaves)  # and smooth parts.

  @jax.jit
  def gaps(key):
    def gap(k, scale):
      d = jax.tree.map(
          lambda a, kk: scale * jax.random.normal(kk, a.shape), y,
          dict(zip(sorted(y), jax.random.split(k, len(y)))))
      half_sq = 0.5 * sum(jnp.sum(a ** 2) for a in jax.tree.leaves(d))
      moved = jax.tree.map(jnp.add, y, d)
      return objective(moved) - objective(y) - half_sq
    keys = jax.random.split(key, 3 * 64).reshape(3, 64)
    scales = jnp.array([1e-2, 1e-1, 1.0])
    return jax.vmap(lambda ks, s: jax.vmap(lambda k: gap(k, s))(ks))(keys, scales)

  assert float(jnp.min(gaps(jax.random.key(4)))) >= -1e-5
  # Sparse directions through the zeros only (the kink of the regulariser).
  zeros = jax.tree.map(lambda a: (a == 0).astype(a.dtype), y)
  for sign in (1.0, -1.0):
    d = jax.tree.map(lambda z: sign * 1e-2 * z, zeros)
    moved = jax.tree.map(jnp.add, y, d)
    half_sq = 0.5 * sum(jnp.sum(a ** 2) for a in jax.tree.leaves(d))
    assert float(objective(moved) - objective(y) - half_sq) >= -1e-6


def test_traced_strength_under_vmap():
  x = jnp.array([3.0, -1.0])
  ys = jax.vmap(lambda s: mg.prox.lasso(x, s))(jnp.array([0.0, 0.5, 2.0]))
  np.testing.assert_array_equal(ys, [[3.0, -1.0], [2.5, -0.5], [1.0, 0.0]])


def test_get_by_name():
  assert mg.prox.get('group_lasso') is mg.prox.group_lasso
  assert mg.prox.get('lasso') is mg.prox.lasso
  assert mg.prox.get('none') is mg.prox.identity
  assert mg.prox.get(mg.prox.lasso) is mg.prox.lasso
  with pytest.raises(ValueError, match='unknown prox'):
    mg.prox.get('l0')
