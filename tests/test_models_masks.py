"""Tests of path masks and stage-II subnet masks (docs/design.md s.2, s.4)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mg import models

DIGITS = (8, 8, 1)


def _build(name, **kwargs):
  return models.build(name, input_shape=DIGITS, num_classes=3, **kwargs)


def _flat(mask):
  return {jax.tree_util.keystr(path): leaf for path, leaf
          in jax.tree_util.tree_leaves_with_path(mask)}


def test_path_masks():
  params = _build('cnn7').init(jax.random.key(0))
  gating = _flat(models.gating_mask(params))
  backbone = _flat(models.backbone_mask(params))
  out = _flat(models.gate_output_mask(params))
  assert len(gating) == 7 * 2 + 2 * 4
  for path, is_gate in gating.items():
    assert is_gate == path.startswith("['phi']")
    assert backbone[path] == (not is_gate)
    assert out[path] == (is_gate and "['out']" in path)
  assert sum(out.values()) == 4  # conv5/conv6 x out/{kernel,bias}
  # Stacked (vmapped) parameters: only paths matter.
  keys = jax.random.split(jax.random.key(0), 2)
  stacked = jax.vmap(_build('cnn4').init)(keys)
  assert sum(jax.tree.leaves(models.gate_output_mask(stacked))) == 2


def test_path_masks_on_ungated_params():
  params = _build('mlp', gating=False).init(jax.random.key(0))
  assert not any(jax.tree.leaves(models.gating_mask(params)))
  assert all(jax.tree.leaves(models.backbone_mask(params)))


@pytest.mark.parametrize('bad', [
    {'theta': {'conv1': {'kernel': 1.0, 'scale': 1.0}}},
    {'phi': {'conv3': {'middle': {'kernel': 1.0}}}},
    {'theta': {'conv1': {'kernel': 1.0}}, 'batch_stats': {'mean': 0.0}},
])
def test_path_mask_rejects_unknown_leaf(bad):
  with pytest.raises(ValueError, match='matches no mask rule'):
    models.gating_mask(bad)


def test_kept_channels():
  gates = {'a': jnp.array([[1, 1, 0, 0],
                           [1, 0, 0, 0],
                           [1, 1, 1, 0],
                           [0, 0, 0, 1]], jnp.float32)}  # row 3 is padding
  valid = jnp.array([1, 1, 1, 0])
  # On-counts over the 3 valid rows: [3, 2, 1, 0].
  keep = lambda frac: np.asarray(models.kept_channels(gates, valid, frac)['a'])
  np.testing.assert_array_equal(keep(0.0), [True, True, True, False])
  np.testing.assert_array_equal(keep(1 / 3), [True, True, True, False])
  np.testing.assert_array_equal(keep(0.5), [True, True, False, False])
  np.testing.assert_array_equal(keep(2 / 3), [True, True, False, False])
  np.testing.assert_array_equal(keep(1.0), [True, False, False, False])
  # jit-safe with a traced fraction.
  jitted = jax.jit(models.kept_channels)(gates, valid, 0.5)
  np.testing.assert_array_equal(jitted['a'], keep(0.5))


def test_subnet_mask_cnn4_conv3():
  model = _build('cnn4')
  theta = model.init(jax.random.key(0))['theta']
  keep = np.zeros(128, bool)
  keep[[0, 5, 127]] = True
  mask = models.subnet_mask(model, theta, {'conv3': jnp.asarray(keep)})
  assert jax.tree.map(jnp.shape, mask) == jax.tree.map(jnp.shape, theta)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(mask))
  for layer in ('conv1', 'conv2'):
    assert all(np.all(leaf == 1) for leaf in jax.tree.leaves(mask[layer]))
  np.testing.assert_array_equal(mask['conv3']['bias'], keep)
  np.testing.assert_array_equal(
      mask['conv3']['kernel'], np.broadcast_to(keep, (3, 3, 64, 128)))
  # 8x8 input -> 1x1x128 before the dense layer: row c is channel c.
  np.testing.assert_array_equal(mask['dense']['kernel'],
                                np.broadcast_to(keep[:, None], (128, 3)))
  np.testing.assert_array_equal(mask['dense']['bias'], np.ones(3))


def test_subnet_mask_dense_rows_follow_nhwc_flatten():
  model = models.build('cnn4', input_shape=(16, 16, 1), num_classes=2)
  theta = jax.eval_shape(model.init, jax.random.key(0))['theta']
  keep = jnp.arange(128) % 3 == 0
  mask = models.subnet_mask(model, theta, {'conv3': keep})
  rows = mask['dense']['kernel'][:, 0]
  assert rows.shape == (2 * 2 * 128,)
  np.testing.assert_array_equal(rows, np.arange(512) % 128 % 3 == 0)


def test_subnet_mask_consecutive_gated_layers():
  model = _build('cnn7')
  theta = model.init(jax.random.key(0))['theta']
  keep5 = jnp.arange(128) < 100
  keep6 = jnp.arange(128) % 2 == 0
  mask = models.subnet_mask(model, theta, {'conv5': keep5, 'conv6': keep6})
  np.testing.assert_array_equal(
      mask['conv6']['kernel'][1, 1], np.outer(keep5, keep6))
  np.testing.assert_array_equal(mask['conv6']['bias'], keep6)
  np.testing.assert_array_equal(mask['conv5']['kernel'][0, 2, 7], keep5)
  np.testing.assert_array_equal(mask['dense']['kernel'][:, 1], keep6)
  assert np.all(mask['conv4']['kernel'] == 1)


def test_subnet_mask_mlp_and_errors():
  model = _build('mlp')
  theta = model.init(jax.random.key(0))['theta']
  keep = jnp.arange(100) >= 90
  mask = models.subnet_mask(model, theta, {'hidden': keep})
  np.testing.assert_array_equal(mask['hidden']['kernel'][3], keep)
  np.testing.assert_array_equal(mask['out']['kernel'][:, 2], keep)
  with pytest.raises(ValueError, match='classifier'):
    models.subnet_mask(model, theta, {'out': jnp.ones(3, bool)})
  with pytest.raises(ValueError, match='must have shape'):
    models.subnet_mask(model, theta, {'hidden': jnp.ones(10, bool)})


def test_frozen_leaves_receive_zero_update():
  model = _build('cnn7')
  params = model.init(jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (4,) + DIGITS)
  labels = jnp.array([0, 1, 2, 1])

  def loss(theta):
    logits, _ = model.apply({'theta': theta, 'phi': params['phi']}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  keep = {'conv5': jnp.arange(128) < 64, 'conv6': jnp.arange(128) % 4 == 1}
  mask = jax.jit(lambda t, k: models.subnet_mask(model, t, k))(
      params['theta'], keep)
  grads = models.apply_mask(jax.jit(jax.grad(loss))(params['theta']), mask)
  opt = optax.sgd(0.1)
  updates, _ = opt.update(grads, opt.init(params['theta']))
  new_theta = optax.apply_updates(params['theta'], updates)
  changed = jax.tree.map(lambda a, b: np.asarray(a != b), new_theta,
                         params['theta'])
  for m, moved in zip(jax.tree.leaves(mask), jax.tree.leaves(changed)):
    assert not np.any(moved & (np.asarray(m) == 0))
  # Kept weights do move (the mask is not all-zero in effect).
  assert np.any(changed['conv6']['kernel'])
  assert np.any(changed['conv1']['kernel'])


def test_subnet_mask_matches_gradient_support_of_off_channels():
  # A channel off for every example gets no gradient anyway: the subnet
  # mask freezes exactly weights whose gradient is already zero.
  model = _build('cnn4')
  params = model.init(jax.random.key(0))
  off = jnp.arange(128) % 3 == 0
  phi = jax.tree.map(lambda a: a, params['phi'])
  phi['conv3']['out']['bias'] = jnp.where(off, -1e4, 1e4)
  x = jax.random.normal(jax.random.key(1), (6,) + DIGITS)
  labels = jnp.array([0, 1, 2, 0, 1, 2])

  def loss(theta):
    logits, gates = model.apply({'theta': theta, 'phi': phi}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), gates

  grads, gates = jax.jit(jax.grad(loss, has_aux=True))(params['theta'])
  keep = models.kept_channels(gates, jnp.ones(6))
  np.testing.assert_array_equal(keep['conv3'], ~off)
  mask = models.subnet_mask(model, params['theta'], keep)
  for g, m in zip(jax.tree.leaves(grads), jax.tree.leaves(mask)):
    assert np.all(np.asarray(g)[np.asarray(m) == 0] == 0)
