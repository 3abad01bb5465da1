"""Known-answer tests of mg.optim (docs/design.md section 3; Ghadimi & Lan 2016; ISTA)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import mg.optim
import mg.prox


# ----------------------------------------------------------------------------
# Problems with known solutions.


def _spd_matrix(dim, condition, seed):
  """Symmetric positive definite, eigenvalues log-spaced in [1/condition, 1]."""
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
  return (q * np.geomspace(1.0 / condition, 1.0, dim)) @ q.T


def _soft_threshold(x, threshold):
  return np.sign(x) * np.maximum(np.abs(x) - threshold, 0.0)


class _Quadratic:
  """f(x) = 1/2 x'Ax - b'x over a pytree template, L = 1 (largest eigenvalue)."""

  def __init__(self, template, a, b):
    self.template = template
    _, self.unravel = ravel_pytree(template)
    self.a, self.b = a, b

  def grad(self, tree):
    x, _ = ravel_pytree(tree)
    return self.unravel(jnp.asarray(self.a, jnp.float32) @ x
                        - jnp.asarray(self.b, jnp.float32))

  def grad_np(self, x):
    return self.a @ x - self.b


def _lasso_problem(strength=0.1, condition=100.0, seed=0):
  """min f(x) + strength*||x||_1 with a planted solution x* (every third entry 0).

  b = A x* + strength*g with g in the l1 subdifferential at x* (g_i = sign x*_i,
  |g_i| <= 1/2 on zeros), so 0 in A x* - b + strength*d||x*||_1: x* is optimal, and
  unique since A is positive definite.
  """
  rng = np.random.default_rng(seed + 1)
  template = {'w': jnp.zeros((8,)), 'v': jnp.zeros((3, 4))}
  dim = 20
  a = _spd_matrix(dim, condition, seed)
  x_star = rng.normal(size=dim)
  x_star[::3] = 0.0
  g = np.sign(x_star)
  g[x_star == 0] = rng.uniform(-0.5, 0.5, size=int(np.sum(x_star == 0)))
  return _Quadratic(template, a, a @ x_star + strength * g), x_star


def _group_lasso_problem(strength=0.1, condition=100.0, seed=0):
  """min f(x) + strength*sum_c ||x_c||_2, groups = columns of kernel with bias.

  Planted x* with groups 1 and 3 zero; g_c = x*_c / ||x*_c|| on the others and a
  vector of norm 1/2 on the zero groups, b = A x* + strength*g (as above).
  """
  rng = np.random.default_rng(seed + 1)
  template = {'kernel': jnp.zeros((3, 5)), 'bias': jnp.zeros((5,))}
  x_tree = {'kernel': rng.normal(size=(3, 5)), 'bias': rng.normal(size=(5,))}
  for leaf in x_tree.values():
    leaf[..., [1, 3]] = 0.0
  norms = np.sqrt(np.sum(x_tree['kernel'] ** 2, 0) + x_tree['bias'] ** 2)
  g_tree = {k: np.where(norms > 0, v / np.where(norms > 0, norms, 1), 0.0)
            for k, v in x_tree.items()}
  for c in (1, 3):
    direction = rng.normal(size=4)
    direction *= 0.5 / np.linalg.norm(direction)
    g_tree['kernel'][:, c], g_tree['bias'][c] = direction[:3], direction[3]
  x_star = np.asarray(ravel_pytree(x_tree)[0], np.float64)
  g = np.asarray(ravel_pytree(g_tree)[0], np.float64)
  a = _spd_matrix(x_star.size, condition, seed)
  return _Quadratic(template, a, a @ x_star + strength * g), x_star


def _flat(tree):
  return np.asarray(ravel_pytree(tree)[0])


def _run(tx, problem, rounds, x0=None):
  """Jitted rounds of ``tx`` on ``problem``; returns the params after each round."""
  params = problem.template if x0 is None else x0
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    updates, state = tx.update(problem.grad(params), state, params)
    return optax.apply_updates(params, updates), state

  history = []
  for _ in range(rounds):
    params, state = step(params, state)
    history.append(_flat(params))
  return np.stack(history), state


# ----------------------------------------------------------------------------
# proximal.


def test_proximal_requires_params():
  tx = mg.optim.proximal(mg.prox.lasso, 0.1, 0.1)
  state = tx.init(jnp.zeros(3))
  with pytest.raises(ValueError, match='needs the current parameters'):
    tx.update(jnp.ones(3), state)


def test_proximal_after_sgd_is_ista():
  strength, lr = 0.1, 1.0  # L = 1.
  problem, _ = _lasso_problem(strength)
  tx = optax.chain(optax.sgd(lr), mg.optim.proximal(mg.prox.lasso, strength, lr))
  history, _ = _run(tx, problem, rounds=30)
  x = np.zeros(20)
  for k in range(30):  # Beck & Teboulle (2009), ISTA with constant step 1/L.
    x = _soft_threshold(x - lr * problem.grad_np(x), lr * strength)
    np.testing.assert_allclose(history[k], x, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(history[k] == 0, x == 0)


def test_proximal_learning_rate_schedule_matches_sgd_schedule():
  strength = 0.1
  schedule = lambda count: 1.0 / (1.0 + count)  # 0-based, as optax's schedules.
  problem, _ = _lasso_problem(strength)
  tx = optax.chain(optax.sgd(schedule),
                   mg.optim.proximal('lasso', strength, schedule))
  history, _ = _run(tx, problem, rounds=5)
  x = np.zeros(20)
  for k in range(5):
    x = _soft_threshold(x - schedule(k) * problem.grad_np(x), schedule(k) * strength)
    np.testing.assert_allclose(history[k], x, rtol=1e-4, atol=1e-5)


def _gated_tree():
  """CNN-like tree: theta, a gate hidden layer and a gate output layer (4 groups)."""
  full = lambda shape, value: jnp.full(shape, value, jnp.float32)
  return {
      'theta': {'conv': {'kernel': full((3, 4), 0.3), 'bias': full(4, 0.0)}},
      'phi': {'conv': {'hidden': {'kernel': full((4, 2), 0.3),
                                  'bias': full(2, 0.0)},
                       'out': {'kernel': full((2, 4), 0.3),
                               'bias': full(4, 0.0)}}},
  }


def _gate_output_mask(params):
  return jax.tree_util.tree_map_with_path(
      lambda path, _: jax.tree_util.keystr(path).startswith(
          "['phi']['conv']['out']"), params)


def test_proximal_after_adam_keeps_zeros_exact_and_leaves_others_alone():
  params = _gated_tree()
  # Separable loss 1/2||p - target||^2; gate-output groups 2, 3 have target 0
  # (Adam's steps are scale-free, so a small nonzero target would not be zeroed).
  target = jax.tree.map(lambda p: jnp.ones_like(p), params)
  small = jnp.array([1.0, 1.0, 0.0, 0.0])
  target['phi']['conv']['out'] = {'kernel': jnp.ones((2, 4)) * small,
                                  'bias': small}
  grad = lambda p: jax.tree.map(jnp.subtract, p, target)
  lr, strength = 0.05, 0.5
  proximal_adam = optax.chain(
      optax.adam(lr),
      mg.optim.proximal(mg.prox.group_lasso, strength, lr, mask=_gate_output_mask))
  plain_adam = optax.adam(lr)

  @jax.jit
  def steps(params):
    def body(_, carry):
      (p, s), (q, r) = carry
      u, s = proximal_adam.update(grad(p), s, p)
      v, r = plain_adam.update(grad(q), r, q)
      return (optax.apply_updates(p, u), s), (optax.apply_updates(q, v), r)
    init = ((params, proximal_adam.init(params)), (params, plain_adam.init(params)))
    (p, _), (q, _) = jax.lax.fori_loop(0, 100, body, init)
    return p, q

  p, q = steps(params)
  out = p['phi']['conv']['out']
  np.testing.assert_array_equal(out['kernel'][:, 2:], 0.0)
  np.testing.assert_array_equal(out['bias'][2:], 0.0)
  assert np.all(out['kernel'][:, :2] > 0.5) and np.all(out['bias'][:2] > 0.5)
  # Unselected leaves took exactly the plain Adam steps.
  chex.assert_trees_all_equal(p['theta'], q['theta'])
  chex.assert_trees_all_equal(p['phi']['conv']['hidden'],
                              q['phi']['conv']['hidden'])


def test_mask_forms_agree():
  params = _gated_tree()
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.2), params)
  as_tree = _gate_output_mask(params)
  as_prefix = {'theta': False, 'phi': {'conv': {'hidden': False, 'out': True}}}
  results = []
  for mask in (_gate_output_mask, as_tree, as_prefix):
    tx = mg.optim.proximal(mg.prox.group_lasso, 1.0, 1.0, mask=mask)
    results.append(jax.jit(tx.update)(grads, tx.init(params), params)[0])
  chex.assert_trees_all_equal(results[0], results[1], results[2])
  # Gate-output groups: norm of (0.5, 0.5, 0.5) = 0.87 < 1 -> -params (zeroed).
  chex.assert_trees_all_close(results[0]['phi']['conv']['out'],
                              jax.tree.map(jnp.negative,
                                           params['phi']['conv']['out']))
  chex.assert_trees_all_equal(results[0]['theta'], grads['theta'])


# ----------------------------------------------------------------------------
# accelerate.


def test_accelerate_with_alpha_one_is_proximal_gradient_descent():
  strength = 0.1
  problem, _ = _lasso_problem(strength)
  for beta, eta in [(1.0, None), (0.3, 0.9)]:
    tx = mg.optim.accelerate(beta, eta=eta, alpha=1.0, prox=mg.prox.lasso,
                             strength=strength)
    history, state = _run(tx, problem, rounds=25)
    step = beta if eta is None else eta  # x_md = x_prev follows the eta steps.
    x = np.zeros(20)
    for k in range(25):
      x = _soft_threshold(x - step * problem.grad_np(x), step * strength)
      np.testing.assert_allclose(history[k], x, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(history[-1] == 0, x == 0)
    if eta is None:
      np.testing.assert_allclose(_flat(mg.optim.accelerated_params(state)), x,
                                 rtol=1e-4, atol=1e-5)


def _accelerated_reference(problem, beta, eta, alpha, rounds):
  """docs/design.md section 3 as a plain float64 loop (prox = identity)."""
  x_prev = x_ag = np.zeros(problem.b.size)
  x_mds, x_ags = [], []
  for t in range(1, rounds + 1):
    x_md = (1 - alpha(t)) * x_ag + alpha(t) * x_prev
    g = problem.grad_np(x_md)
    x_prev = x_prev - eta(t) * g
    x_ag = x_md - beta * g
    x_mds.append((1 - alpha(t + 1)) * x_ag + alpha(t + 1) * x_prev)
    x_ags.append(x_ag)
  return np.stack(x_mds), np.stack(x_ags)


@pytest.mark.parametrize('schedule', ['default_alpha', 'custom_alpha'])
def test_accelerate_matches_plain_loop_on_quadratic(schedule):
  problem, _ = _lasso_problem(strength=0.0, condition=30.0)
  beta = 0.5
  eta = lambda t: t * beta / 2  # Ghadimi & Lan's convex policy.
  if schedule == 'default_alpha':
    alpha, ref_alpha = None, lambda t: 2.0 / (t + 1)
  else:
    alpha = ref_alpha = lambda t: 3.0 / (t + 2)
  rounds = 20
  tx = mg.optim.accelerate(beta, eta=eta, alpha=alpha)
  params, state = problem.template, tx.init(problem.template)
  x_md_ref, x_ag_ref = _accelerated_reference(problem, beta, eta, ref_alpha, rounds)
  step = jax.jit(tx.update)
  for k in range(rounds):
    updates, state = step(problem.grad(params), state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(_flat(params), x_md_ref[k], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_flat(mg.optim.accelerated_params(state)),
                               x_ag_ref[k], rtol=1e-4, atol=1e-5)
  assert state.count == rounds and state.count.dtype == jnp.int32


def test_accelerate_default_eta_coincides_with_gradient_descent():
  # eta = beta: x_prev = x_ag = x_md by induction (the docstring's caveat).
  problem, _ = _lasso_problem(strength=0.0, condition=30.0)
  history, state = _run(mg.optim.accelerate(0.5), problem, rounds=10)
  x = np.zeros(20)
  for k in range(10):
    x = x - 0.5 * problem.grad_np(x)
    np.testing.assert_allclose(history[k], x, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(state.x_prev, state.x_ag, rtol=1e-6)


def _rounds_to_solution(tx, problem, x_star, tol, max_rounds=20000):
  """Rounds until ||x_ag - x*|| <= tol ||x*||, in one compiled while loop."""
  x_star = jnp.asarray(x_star, jnp.float32)
  threshold = tol * jnp.linalg.norm(x_star)

  def output(params, state):
    return state.x_ag if isinstance(state, mg.optim.AccelerateState) else params

  def distance(params, state):
    return jnp.linalg.norm(ravel_pytree(output(params, state))[0] - x_star)

  def cond(carry):
    k, params, state = carry
    return (distance(params, state) > threshold) & (k < max_rounds)

  def body(carry):
    k, params, state = carry
    updates, state = tx.update(problem.grad(params), state, params)
    return k + 1, optax.apply_updates(params, updates), state

  params = problem.template
  k, params, state = jax.jit(lambda c: jax.lax.while_loop(cond, body, c))(
      (0, params, tx.init(params)))
  return int(k), _flat(output(params, state))


@pytest.mark.parametrize('name', ['lasso', 'group_lasso'])
def test_accelerate_converges_faster_than_proximal_gradient(name):
  strength = 0.1
  make = _lasso_problem if name == 'lasso' else _group_lasso_problem
  problem, x_star = make(strength, condition=1000.0)
  prox = mg.prox.get(name)
  beta = 0.5  # 1/(2L), Ghadimi & Lan's step; L = 1.
  accelerated = mg.optim.accelerate(beta, eta=lambda t: t * beta / 2,
                                    prox=prox, strength=strength)
  ista = optax.chain(optax.sgd(beta), mg.optim.proximal(prox, strength, beta))
  ista_1_over_l = optax.chain(optax.sgd(1.0), mg.optim.proximal(prox, strength, 1.0))
  tol = 1e-4
  acc_rounds, acc_x = _rounds_to_solution(accelerated, problem, x_star, tol)
  gd_rounds, gd_x = _rounds_to_solution(ista, problem, x_star, tol)
  gd_best_rounds, _ = _rounds_to_solution(ista_1_over_l, problem, x_star, tol)
  print(f'{name}: rounds to ||x - x*|| <= {tol}||x*||: accelerated (beta=1/2L, '
        f'eta_t=t*beta/2) {acc_rounds}; proximal gradient beta=1/2L {gd_rounds}; '
        f'beta=1/L {gd_best_rounds}')
  assert acc_rounds < 20000 and gd_rounds < 20000
  assert acc_rounds < 0.6 * gd_rounds
  assert acc_rounds < gd_best_rounds
  for x in (acc_x, gd_x):
    np.testing.assert_allclose(x, x_star, atol=3e-4 * np.linalg.norm(x_star))
    np.testing.assert_array_equal(x[x_star == 0], 0.0)  # Exact support recovery.


def test_accelerate_prox_touches_masked_leaves_only():
  params = _gated_tree()  # theta and phi/hidden have other trailing sizes.
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)
  tx = mg.optim.accelerate(1.0, alpha=1.0, prox=mg.prox.group_lasso, strength=1.0,
                           mask=_gate_output_mask)
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  # Plain steps: 0.3 - 0.1 and 0 - 0.1. Gate output: groups (0.2, 0.2, -0.1) of
  # norm 0.3 < 1 -> exactly zero.
  chex.assert_trees_all_close(
      new['theta'], {'conv': {'kernel': jnp.full((3, 4), 0.2),
                              'bias': jnp.full(4, -0.1)}}, rtol=1e-6)
  chex.assert_trees_all_close(
      new['phi']['conv']['hidden'], {'kernel': jnp.full((4, 2), 0.2),
                                     'bias': jnp.full(2, -0.1)}, rtol=1e-6)
  np.testing.assert_array_equal(_flat(new['phi']['conv']['out']), 0.0)
  chex.assert_trees_all_equal(mg.optim.accelerated_params(state), new)


def test_accelerate_keeps_dtypes():
  params = {'w': jnp.ones((2, 3), jnp.bfloat16), 'b': jnp.ones((3,), jnp.float32)}
  tx = mg.optim.accelerate(0.1, eta=0.2, prox='group_lasso', strength=0.01)
  state = tx.init(params)
  updates, state = jax.jit(tx.update)(params, state, params)
  chex.assert_trees_all_equal_dtypes(updates, params)
  chex.assert_trees_all_equal_dtypes(state.x_prev, params)
  chex.assert_trees_all_equal_dtypes(state.x_ag, params)


def test_no_recompilation_on_later_calls():
  params = _gated_tree()
  tx = mg.optim.accelerate(0.5, eta=lambda t: t * 0.25, prox=mg.prox.group_lasso,
                           strength=0.1, mask=_gate_output_mask)
  traces = []

  def step(params, state, grads):
    traces.append(1)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  step = jax.jit(step)
  state = tx.init(params)
  for k in range(3):
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1 * k), params)
    params, state = step(params, state, grads)
  assert len(traces) == 1
  assert step._cache_size() == 1  # pylint: disable=protected-access


def test_inject_hyperparams():
  problem, _ = _lasso_problem(0.1)
  mask = jax.tree.map(lambda _: True, problem.template)
  plain = mg.optim.accelerate(0.5, prox=mg.prox.lasso, strength=0.1, mask=mask)
  expected, _ = _run(plain, problem, rounds=5)
  # By name and bool-tree mask: nothing callable, so no static_args needed.
  by_name = optax.inject_hyperparams(mg.optim.accelerate)(
      beta=0.5, prox='lasso', strength=0.1, mask=mask)
  # A prox function and a callable mask are static, not schedules.
  by_function = optax.inject_hyperparams(
      mg.optim.accelerate, static_args=('prox', 'mask'))(
          beta=0.5, prox=mg.prox.lasso, strength=0.1, mask=lambda p: mask)
  for tx in (by_name, by_function):
    history, state = _run(tx, problem, rounds=5)
    np.testing.assert_allclose(history, expected, rtol=1e-6, atol=1e-7)
    assert set(state.hyperparams) == {'beta', 'strength'}
    np.testing.assert_allclose(_flat(mg.optim.accelerated_params(state)),
                               expected[-1], rtol=1e-6, atol=1e-7)
  # Smooth accelerate and proximal wrap as well; a changed hyperparameter is used.
  smooth = optax.inject_hyperparams(mg.optim.accelerate)(beta=0.5)
  state = smooth.init(problem.template)
  state.hyperparams['beta'] = jnp.asarray(0.25)
  updates, _ = smooth.update(problem.grad(problem.template), state,
                             problem.template)
  np.testing.assert_allclose(_flat(updates), 0.25 * problem.b, rtol=1e-5)
  prox_sgd = optax.chain(optax.sgd(1.0), optax.inject_hyperparams(
      mg.optim.proximal, static_args='prox')(mg.prox.lasso, 0.1, 1.0))
  history, _ = _run(prox_sgd, problem, rounds=3)
  ista, _ = _run(optax.chain(optax.sgd(1.0), mg.optim.proximal('lasso', 0.1, 1.0)),
                 problem, rounds=3)
  np.testing.assert_allclose(history, ista, rtol=1e-6, atol=1e-7)


def test_vmap_over_beta_and_strength():
  problem, _ = _lasso_problem(0.1)
  betas = jnp.array([0.2, 0.5, 0.9])
  strengths = jnp.array([0.0, 0.05, 0.2])

  def final_output(beta, strength):
    tx = mg.optim.accelerate(beta, eta=lambda t: t * beta / 2, prox=mg.prox.lasso,
                             strength=strength)
    def body(_, carry):
      params, state = carry
      updates, state = tx.update(problem.grad(params), state, params)
      return optax.apply_updates(params, updates), state
    params = problem.template
    _, state = jax.lax.fori_loop(0, 8, body, (params, tx.init(params)))
    return ravel_pytree(mg.optim.accelerated_params(state))[0]

  batched = jax.jit(jax.vmap(final_output))(betas, strengths)
  for i in range(3):
    single = final_output(float(betas[i]), float(strengths[i]))
    np.testing.assert_allclose(batched[i], single, rtol=1e-5, atol=1e-6)
  assert not np.allclose(batched[0], batched[2])


def test_argument_errors():
  with pytest.raises(ValueError, match='no effect without a prox'):
    mg.optim.accelerate(0.1, strength=0.1)
  with pytest.raises(ValueError, match='alpha'):
    mg.optim.accelerate(0.1, alpha=1.5)
  with pytest.raises(ValueError, match='beta'):
    mg.optim.accelerate(0.0)
  with pytest.raises(ValueError, match='strength'):
    mg.optim.proximal(mg.prox.lasso, -1.0, 0.1)
  params = {'a': jnp.ones(3), 'b': jnp.ones(3)}
  tx = mg.optim.accelerate(0.1, prox='lasso', strength=0.1)
  with pytest.raises(ValueError, match='needs the current parameters'):
    tx.update(params, tx.init(params))
  bad_structure = mg.optim.proximal('lasso', 0.1, 0.1, mask={'a': True})
  with pytest.raises(ValueError, match='mask must be a pytree'):
    bad_structure.update(params, bad_structure.init(params), params)
  traced = mg.optim.proximal('lasso', 0.1, 0.1,
                             mask=lambda p: jax.tree.map(lambda x: x[0] > 0, p))
  with pytest.raises(TypeError, match='static Python bools'):
    jax.jit(traced.update)(params, traced.init(params), params)
  with pytest.raises(ValueError, match='one AccelerateState'):
    mg.optim.accelerated_params(optax.sgd(0.1).init(params))
