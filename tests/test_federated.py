"""Local solves, client mapping and one round of every method (issue 5)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mg.metagater import methods as methods_lib
from mg import models
from mg.federated import server as server_lib
from mg.metagater.algorithms.metagater import metagater
from mg.federated import local
from mg.federated import mapping


def _trees_close(a, b, **kw):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **kw), a, b)


def _round(method, data, num_tasks, tasks, strategy='unroll'):
  return mapping.make_round(method.algorithm, num_tasks=num_tasks,
                            tasks_per_round=tasks, strategy=strategy)


@pytest.mark.parametrize('name', ['fedavg', 'perfedavg_fo', 'perfedavg_hf',
                                  'metagater_nogate', 'metagater'])
def test_one_round_changes_params_and_keeps_shapes(name, test_config, test_data):
  fed, _, info = test_data
  method = methods_lib.build(name, test_config, info)
  params = method.model.init(jax.random.key(0))
  state = method.algorithm.init(params, **method.hparams)
  num = int(fed.train.count.shape[0])
  round_fn = _round(method, fed, num, 2)
  new_state, diagnostics = round_fn(state, fed.train, jax.random.key(1))
  before = method.algorithm.output(state)
  after = method.algorithm.output(new_state)
  assert jax.tree.structure(before) == jax.tree.structure(after)
  jax.tree.map(lambda a, b: (a.shape, a.dtype) == (b.shape, b.dtype) or pytest.fail('shape'),
               before, after)
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before, after))
  assert any(changed)
  assert bool(diagnostics['finite'])
  assert np.isfinite(float(diagnostics['loss']))


@pytest.mark.parametrize('strategy, name', [
    ('vmap', 'metagater'), ('unroll', 'metagater'), ('scan', 'metagater'),
    ('loop', 'metagater'), ('vmap', 'fedavg'), ('scan', 'fedavg'), ('loop', 'fedavg')])
def test_strategies_agree_and_compile_once(strategy, name, test_config, test_data):
  """Every mapping gives the unrolled round's result (FedAvg: count-weighted mean)."""
  fed, _, info = test_data
  method = methods_lib.build(name, test_config, info)
  state = method.algorithm.init(method.model.init(jax.random.key(0)), **method.hparams)
  num = int(fed.train.count.shape[0])
  reference = _round(method, fed, num, 3, 'unroll')(state, fed.train,
                                                     jax.random.key(3))[0]
  round_fn = _round(method, fed, num, 3, strategy)
  got = round_fn(state, fed.train, jax.random.key(3))[0]
  _trees_close(reference.params, got.params, rtol=2e-4, atol=2e-5)
  round_fn(got, fed.train, jax.random.key(4))
  if strategy != 'loop':
    assert round_fn._cache_size() == 1


def test_local_solve_with_zero_steps_returns_x_md(test_data):
  fed, _, info = test_data
  model = models.build('mlp', input_shape=info['input_shape'],
                       num_classes=info['num_classes'])
  x_md = model.init(jax.random.key(0))
  task = local.task_slice(fed.train, 0)
  z, _ = local.local_solve(server_lib.task_loss(model, 1.0), x_md, task, jax.random.key(1),
                           steps=0, learning_rate=0.1, lam=1.0, batch_size=0)
  _trees_close(z, x_md, rtol=0, atol=0)


def test_meta_gradient_tends_to_loss_gradient_for_large_lambda(test_data):
  """Moreau-envelope limit: lam (x - z*) -> grad L(x) as lam grows (Zhou et al. 2019)."""
  fed, _, info = test_data
  model = models.build('mlp', input_shape=info['input_shape'],
                       num_classes=info['num_classes'], gating=False)
  x_md = model.init(jax.random.key(0))
  task = local.task_slice(fed.train, 0)
  loss = server_lib.task_loss(model, 1.0)
  lam = 1000.0
  z, _ = local.local_solve(loss, x_md, task, jax.random.key(1), steps=60,
                           learning_rate=0.5 / lam, lam=lam, batch_size=0, scan=True)
  meta_grad = jax.tree.map(lambda x, zz: lam * (x - zz), x_md, z)
  grad = jax.grad(loss)(x_md, (task.x, task.y, task.mask), jax.random.key(2))
  flat = lambda t: jnp.concatenate([a.ravel() for a in jax.tree.leaves(t)])
  err = jnp.linalg.norm(flat(meta_grad) - flat(grad)) / jnp.linalg.norm(flat(grad))
  assert float(err) < 0.02, float(err)


def test_group_lasso_zeroes_gate_groups_with_large_rho(test_config, test_data):
  fed, _, info = test_data
  method = methods_lib.build('metagater', test_config, info)
  hparams = dict(method.hparams, rho=2.0)
  state = method.algorithm.init(method.model.init(jax.random.key(0)), **hparams)
  num = int(fed.train.count.shape[0])
  round_fn = _round(method, fed, num, 2)
  for t in range(3):
    state, diagnostics = round_fn(state, fed.train, jax.random.key(t))
  out = method.algorithm.output(state)
  kernel = out['phi']['conv3']['out']['kernel']
  bias = out['phi']['conv3']['out']['bias']
  zero = np.all(np.asarray(kernel) == 0, axis=0) & (np.asarray(bias) == 0)
  assert zero.sum() > 0
  assert float(diagnostics['zero_gate_groups']) == pytest.approx(zero.mean())
  # The backbone is not touched by the prox: no exact zeros appear there.
  assert all(np.count_nonzero(np.asarray(l)) > 0 for l in jax.tree.leaves(out['theta']))


def test_unaccelerated_alpha_one_is_plain_proximal_step(test_config, test_data):
  """With alpha=1, x_ag after one round is prox(x_md - beta G)."""
  fed, _, info = test_data
  model = methods_lib.build_model(test_config, info, gating=True)
  alg = metagater(model, local_steps=1, batch_size=8, tau=1.0, alpha=1.0, eta='beta')
  state = alg.init(model.init(jax.random.key(0)), lam=1.0, local_lr=0.1, beta=0.5, rho=0.0)
  num = int(fed.train.count.shape[0])
  round_fn = mapping.make_round(alg, num_tasks=num, tasks_per_round=2, strategy='unroll')
  new_state, _ = round_fn(state, fed.train, jax.random.key(5))
  _trees_close(alg.output(new_state), new_state.params, rtol=0, atol=0)
