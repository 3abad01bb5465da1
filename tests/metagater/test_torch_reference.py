"""The PyTorch reference round does the JAX model's and server's arithmetic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mg import data as data_lib
from mg import models
from mg import optim
from mg.metagater import torch_reference
from mg.federated import server as server_lib
from mg.metagater.algorithms.metagater import metagater

pytest.importorskip('torch')


def _flat(tree):
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _gate_noise(model, key, batch):
  """The logistic draws ``model.apply`` makes (``fold_in(key, layer index)``)."""
  return {spec.name: jax.random.logistic(jax.random.fold_in(key, index),
                                         (batch, spec.features))
          for index, spec in enumerate(model.layers) if spec.name in model.gated_layers}


@pytest.mark.parametrize('name, shape', [('cnn4', (8, 8, 3)), ('mlp', (6, 6, 1))])
def test_one_step_loss_and_gradients_match_jax(name, shape, monkeypatch):
  model = models.build(name, input_shape=shape, num_classes=5)
  params = jax.jit(model.init)(jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (6,) + shape)
  batch = (x, jnp.arange(6) % 5, jnp.array([1., 1., 1., 1., 1., 0.]))
  key = jax.random.key(2)
  # The JAX model's own gate noise: the same loss.
  value = jax.jit(server_lib.task_loss(model, 1.0))(params, batch, key)
  torch_value, _ = torch_reference.value_and_grad(model, params, batch,
                                                  _gate_noise(model, key, 6))
  np.testing.assert_allclose(torch_value, float(value), rtol=1e-5)
  # Noise of +10 or more opens every gate (a closed gate's straight-through
  # gradient depends on how max-pool splits ties; see mg.metagater.torch_reference); at
  # tau = 10 the sigmoid still passes a gradient. Then every gradient agrees.
  noise = {k: jnp.abs(v) + 10.0 for k, v in _gate_noise(model, key, 6).items()}
  draws = iter(noise.values())  # the model draws in layer order
  monkeypatch.setattr(jax.random, 'logistic', lambda key, shape, dtype: next(draws))
  value, grads = jax.jit(jax.value_and_grad(server_lib.task_loss(model, 10.0)))(
      params, batch, key)
  torch_value, torch_grads = torch_reference.value_and_grad(model, params, batch, noise,
                                                            tau=10.0)
  np.testing.assert_allclose(torch_value, float(value), rtol=1e-5)
  for path, g in _flat(grads).items():
    np.testing.assert_allclose(torch_grads[path], g, rtol=1e-4, atol=1e-6, err_msg=path)


def test_server_step_matches_metagater():
  """With a zero local step size every z equals x_md: the round is the server's
  prox and acceleration alone, deterministic in both frameworks."""
  model = models.build('cnn4', input_shape=(8, 8, 3), num_classes=3)
  params = jax.jit(model.init)(jax.random.key(0))
  hp = dict(lam=1.0, local_lr=0.0, beta=0.7, rho=5.0)
  alg = metagater(model, local_steps=1, batch_size=4, tau=1.0)
  state = alg.init(params, **hp)
  server = jax.jit(alg.server)
  for _ in range(2):
    state, _ = server(state, state.params, {'loss': jnp.zeros(())})
  tasks = data_lib.TaskArrays(x=np.zeros((2, 4, 8, 8, 3), np.float32),
                              y=np.zeros((2, 4), np.int32), mask=np.ones((2, 4)),
                              count=np.full((2,), 4))
  reference = torch_reference.MetaGaterRound(
      model, tasks, tasks_per_round=2, local_steps=1, batch_size=4, tau=1.0, **hp)
  torch_state = reference.init(params)
  for _ in range(2):
    torch_state, _ = reference(torch_state)
  x_ag = _flat(optim.accelerated_params(state.opt_state))
  assert np.any(x_ag['phi/conv3/out/bias'] == 0)  # the prox zeroed groups
  for name, tree in (('x_md', state.params), ('x_ag', x_ag)):
    expected = _flat(tree)
    for path, value in torch_reference.to_jax_layout(torch_state[name]).items():
      np.testing.assert_allclose(value, expected[path], rtol=1e-5, atol=1e-6,
                                 err_msg=f'{name} {path}')
