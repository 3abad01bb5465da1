"""Tests of mg.models networks and gating (docs/design.md s.1, s.6)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mg import models
from mg.models import gating

DIGITS = (8, 8, 1)


def _batch(shape=DIGITS, batch=4, seed=1):
  return jax.random.normal(jax.random.key(seed), (batch,) + shape)


@functools.lru_cache(maxsize=None)
def _model(name, shape=DIGITS, classes=3, **kwargs):
  return models.build(name, input_shape=shape, num_classes=classes, **kwargs)


def _counts(tree):
  return {k: models.param_count(v) for k, v in tree.items()}


def test_names_and_default_gates():
  assert models.NAMES == ('mlp', 'cnn4', 'cnn7')
  assert _model('mlp').gated_layers == ('hidden',)
  assert _model('cnn4').gated_layers == ('conv3',)
  assert _model('cnn7').gated_layers == ('conv5', 'conv6')
  assert _model('cnn7', gated_layers=('conv6', 'conv1')).gated_layers == (
      'conv1', 'conv6')
  assert _model('cnn4', gating=False).gated_layers == ()
  assert _model('cnn4', gated_layers=()).gated_layers == ('conv3',)
  assert _model('cnn4', gated_layers='conv2').gated_layers == ('conv2',)
  # Hashable and equal by value: usable as a static jit argument.
  again = models.build('cnn4', input_shape=DIGITS, num_classes=3)
  assert again == _model('cnn4') and hash(again) == hash(_model('cnn4'))


def test_param_counts_mlp_mnist():
  model = models.build('mlp', input_shape=(28, 28, 1), num_classes=10)
  params = jax.eval_shape(model.init, jax.random.key(0))
  assert _counts(params['theta']) == {
      'hidden': 784 * 100 + 100,   # 78,500
      'out': 100 * 10 + 10,        # 1,010
  }
  assert _counts(params['phi']) == {
      'hidden': (784 * 16 + 16) + (16 * 100 + 100),  # 12,560 + 1,700
  }
  assert models.param_count(params) == 79_510 + 14_260


def test_param_counts_cnn4_cifar10():
  model = models.build('cnn4', input_shape=(32, 32, 3), num_classes=10)
  params = jax.eval_shape(model.init, jax.random.key(0))
  assert _counts(params['theta']) == {
      'conv1': 3 * 3 * 3 * 32 + 32,     # 896
      'conv2': 3 * 3 * 32 * 64 + 64,    # 18,496
      'conv3': 3 * 3 * 64 * 128 + 128,  # 73,856
      'dense': 4 * 4 * 128 * 10 + 10,   # 2048 inputs: 20,490
  }
  assert _counts(params['phi']) == {
      'conv3': (64 * 16 + 16) + (16 * 128 + 128),  # 1,040 + 2,176
  }
  assert models.param_count(params['theta']) == 113_738
  assert models.param_count(params) == 113_738 + 3_216


def test_param_counts_cnn7_cifar10():
  model = models.build('cnn7', input_shape=(32, 32, 3), num_classes=10)
  params = jax.eval_shape(model.init, jax.random.key(0))
  assert _counts(params['theta']) == {
      'conv1': 3 * 3 * 3 * 32 + 32,       # 896
      'conv2': 3 * 3 * 32 * 32 + 32,      # 9,248
      'conv3': 3 * 3 * 32 * 64 + 64,      # 18,496
      'conv4': 3 * 3 * 64 * 64 + 64,      # 36,928
      'conv5': 3 * 3 * 64 * 128 + 128,    # 73,856
      'conv6': 3 * 3 * 128 * 128 + 128,   # 147,584
      'dense': 128 * 10 + 10,             # after global average pool: 1,290
  }
  assert _counts(params['phi']) == {
      'conv5': (64 * 16 + 16) + (16 * 128 + 128),   # 1,040 + 2,176
      'conv6': (128 * 16 + 16) + (16 * 128 + 128),  # 2,064 + 2,176
  }
  assert models.param_count(params) == 288_298 + 7_456


def test_dense_input_follows_input_size():
  # Floor pooling: 28 -> 14 -> 7 -> 3, 8 -> 4 -> 2 -> 1.
  assert _model('cnn4', (28, 28, 1), 10).layer('dense').in_shape == (1152,)
  assert _model('cnn4', (32, 32, 3), 10).layer('dense').in_shape == (2048,)
  assert _model('cnn4').layer('dense').in_shape == (128,)
  assert _model('cnn7').layer('dense').in_shape == (128,)
  assert _model('mlp').layer('hidden').in_shape == (64,)


@pytest.mark.parametrize('kwargs, match', [
    (dict(name='resnet'), 'Unknown model'),
    (dict(name='cnn4', gated_layers=('conv9',)), 'gateable layers are'),
    (dict(name='cnn4', gated_layers=('dense',)), 'gateable layers are'),
    (dict(name='cnn4', gating=False, gated_layers=('conv_3',)), 'conv_3'),
    (dict(name='cnn4', input_shape=(4, 4, 1)), 'too small'),
])
def test_build_errors(kwargs, match):
  kwargs = dict(dict(input_shape=DIGITS, num_classes=3), **kwargs)
  with pytest.raises(ValueError, match=match):
    models.build(**kwargs)


@pytest.mark.parametrize('name', models.NAMES)
def test_forward_shapes_and_binary_gates(name):
  model = _model(name)
  params = model.init(jax.random.key(0))
  for deterministic in (True, False):
    logits, gates = model.apply(params, _batch(), key=jax.random.key(3),
                                deterministic=deterministic)
    assert logits.shape == (4, 3)
    assert set(gates) == set(model.gated_layers)
    for layer, m in gates.items():
      assert m.shape == (4, model.layer(layer).features)
      assert m.dtype == jnp.float32
      assert set(np.unique(np.asarray(m))) <= {0.0, 1.0}


def test_init_scales():
  model = models.build('cnn4', input_shape=(16, 16, 3), num_classes=10)
  params = model.init(jax.random.key(0))
  theta, phi = params['theta'], params['phi']
  # He normal before a ReLU: std sqrt(2 / fan_in); LeCun for the classifier.
  np.testing.assert_allclose(theta['conv3']['kernel'].std(),
                             np.sqrt(2 / (3 * 3 * 64)), rtol=0.02)
  np.testing.assert_allclose(theta['dense']['kernel'].std(),
                             np.sqrt(1 / (2 * 2 * 128)), rtol=0.05)
  np.testing.assert_allclose(phi['conv3']['hidden']['kernel'].std(),
                             np.sqrt(2 / 64), rtol=0.1)
  for layer in theta.values():
    np.testing.assert_array_equal(layer['bias'], 0.0)
  np.testing.assert_array_equal(phi['conv3']['out']['bias'],
                                gating.OUT_BIAS_INIT)
  # Fresh keys, fresh draws; the same key, the same draw (also under jit).
  other = model.init(jax.random.key(1))
  assert not np.array_equal(theta['conv1']['kernel'],
                            other['theta']['conv1']['kernel'])
  jax.tree.map(np.testing.assert_array_equal, params,
               jax.jit(model.init)(jax.random.key(0)))


@pytest.mark.parametrize('name', models.NAMES)
def test_init_statistics_of_every_leaf(name):
  # Every kernel ~ N(0, gain / fan_in), untruncated: gain 2 (He) before a
  # ReLU and in the gate's hidden layer, 1 (LeCun) for the classifier and the
  # gate's output layer; biases 0, the gate's output bias OUT_BIAS_INIT.
  model = models.build(name, input_shape=(16, 16, 3), num_classes=10,
                       gated_layers=models.DEFAULT_GATED_LAYERS[name]
                       + ('conv1',) * (name != 'mlp'))
  params = model.init(jax.random.key(3))
  expected = {}
  for spec in model.layers:
    expected[('theta', spec.name)] = 2.0 if spec.relu else 1.0
    if spec.name in model.gated_layers:
      expected[('phi', spec.name, 'hidden')] = 2.0
      expected[('phi', spec.name, 'out')] = 1.0
  seen = set()
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    keys = tuple(k.key for k in path)
    leaf = np.asarray(leaf, np.float64)
    if keys[-1] == 'bias':
      want = (gating.OUT_BIAS_INIT if keys[0] == 'phi' and keys[-2] == 'out'
              else 0.0)
      np.testing.assert_array_equal(leaf, want, err_msg=str(keys))
      continue
    gain = expected[keys[:-1]]
    seen.add(keys[:-1])
    fan_in = np.prod(leaf.shape[:-1])
    std, n = np.sqrt(gain / fan_in), leaf.size
    # Four standard errors of the sample mean and of the sample std.
    assert abs(leaf.mean()) < 4 * std / np.sqrt(n), keys
    np.testing.assert_allclose(leaf.std(), std, rtol=4 / np.sqrt(2 * n),
                               err_msg=str(keys))
    if n >= 1000:  # untruncated: ~4.6% beyond two stds (0 if truncated there)
      assert np.mean(np.abs(leaf) > 2 * std) > 0.02, keys
  assert seen == set(expected)


def test_gates_start_mostly_on():
  # Positive logit bias (gating.OUT_BIAS_INIT): the backbone trains first.
  model = _model('cnn7')
  _, gates = model.apply(model.init(jax.random.key(0)), _batch(batch=16))
  for m in gates.values():
    assert float(m.mean()) > 0.7


def test_ungated_model_has_no_phi_and_shares_theta():
  gated, plain = _model('cnn7'), _model('cnn7', gating=False)
  key = jax.random.key(5)
  params, plain_params = gated.init(key), plain.init(key)
  assert plain_params['phi'] == {}
  jax.tree.map(np.testing.assert_array_equal,
               params['theta'], plain_params['theta'])
  _, gates = plain.apply(plain_params, _batch())
  assert gates == {}


@pytest.mark.parametrize('name', models.NAMES)
def test_all_gates_on_equals_backbone(name):
  gated, plain = _model(name), _model(name, gating=False)
  params = gated.init(jax.random.key(0))
  x = _batch()
  on = {l: jnp.ones((gated.layer(l).features,)) for l in gated.gated_layers}
  logits, gates = gated.apply(params, x, gates=on)
  expected, _ = plain.apply({'theta': params['theta'], 'phi': {}}, x)
  np.testing.assert_array_equal(logits, expected)
  for l in gated.gated_layers:
    np.testing.assert_array_equal(gates[l],
                                  np.ones((4, gated.layer(l).features)))


@pytest.mark.parametrize('name, layer', [('mlp', 'hidden'), ('cnn4', 'conv3'),
                                         ('cnn7', 'conv5'), ('cnn4', 'conv1')])
def test_gate_off_zeroes_exactly_that_channel(name, layer):
  # Channel c off == the plain backbone with filter c (kernel and bias)
  # zeroed, since relu(0) = 0 and pooling keeps a zero map at zero.
  model = _model(name, gated_layers=(layer,))
  plain = _model(name, gating=False)
  params = model.init(jax.random.key(0))
  x = _batch()
  c = 5
  off = jnp.ones((model.layer(layer).features,)).at[c].set(0.0)
  logits, _ = model.apply(params, x, gates={layer: off})
  theta = jax.tree.map(lambda a: a, params['theta'])
  theta[layer] = {'kernel': theta[layer]['kernel'].at[..., c].set(0.0),
                  'bias': theta[layer]['bias'].at[c].set(0.0)}
  expected, _ = plain.apply({'theta': theta, 'phi': {}}, x)
  np.testing.assert_allclose(logits, expected, rtol=1e-6, atol=1e-6)
  on, _ = plain.apply({'theta': params['theta'], 'phi': {}}, x)
  assert not np.allclose(logits, on)  # the channel did matter


def test_per_example_gates():
  model = _model('mlp', gating=False)
  params = model.init(jax.random.key(0))
  x = _batch(batch=2)
  forced = jnp.stack([jnp.ones(100), jnp.zeros(100)])
  logits, gates = model.apply(params, x, gates={'hidden': forced})
  np.testing.assert_array_equal(gates['hidden'], forced)
  # Example 1 has every hidden unit off: its logits are the output bias (0).
  np.testing.assert_array_equal(logits[1], params['theta']['out']['bias'])
  full, _ = model.apply(params, x)
  np.testing.assert_array_equal(logits[0], full[0])


def test_straight_through_gradient_reaches_phi():
  model = _model('cnn4')
  params = model.init(jax.random.key(0))
  x, labels = _batch(), jnp.array([0, 1, 2, 0])

  def loss(phi, deterministic):
    logits, gates = model.apply({'theta': params['theta'], 'phi': phi}, x,
                                key=jax.random.key(7),
                                deterministic=deterministic)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, labels).mean(), gates

  grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True),
                    static_argnums=1)
  (_, gates), grads = grad_fn(params['phi'], False)
  assert set(np.unique(np.asarray(gates['conv3']))) <= {0.0, 1.0}
  for leaf in jax.tree.leaves(grads):
    assert float(jnp.abs(leaf).sum()) > 0.0
  # The inference mask 1[z > 0] is a step: no gradient reaches phi.
  (_, _), grads = grad_fn(params['phi'], True)
  for leaf in jax.tree.leaves(grads):
    assert float(jnp.abs(leaf).sum()) == 0.0


def test_straight_through_mask_gradient_is_soft_gradient():
  z = jnp.array([[-2.0, -0.3, 0.0, 0.4, 3.0]])
  key, tau = jax.random.key(11), 0.5
  noise = jax.random.logistic(key, z.shape)
  m = gating.straight_through_mask(z, key, tau)
  np.testing.assert_array_equal(m, (z + noise > 0).astype(jnp.float32))
  grad = jax.grad(lambda z: gating.straight_through_mask(z, key, tau).sum())(z)
  soft = jax.nn.sigmoid((z + noise) / tau)
  np.testing.assert_allclose(grad, soft * (1 - soft) / tau, rtol=1e-6)


def test_inference_gating_is_deterministic_and_training_is_noisy():
  model = _model('cnn7')
  params = model.init(jax.random.key(0))
  x = _batch(batch=8)
  a = model.apply(params, x, key=jax.random.key(1))
  b = model.apply(params, x, key=jax.random.key(2))
  c = model.apply(params, x)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  jax.tree.map(np.testing.assert_array_equal, a, c)
  # Training gates: same key, same masks; another key, other masks.
  train = functools.partial(model.apply, params, x, deterministic=False,
                            tau=1.0)
  g1, g1_again, g2 = (train(key=jax.random.key(k))[1] for k in (1, 1, 2))
  jax.tree.map(np.testing.assert_array_equal, g1, g1_again)
  assert any(not np.array_equal(g1[l], g2[l]) for l in g1)
  # Layers draw different noise (fold_in of the layer index).
  z = jnp.full((8, 128), 0.0)
  assert not np.array_equal(
      gating.straight_through_mask(z, jax.random.fold_in(jax.random.key(1), 4)),
      gating.straight_through_mask(z, jax.random.fold_in(jax.random.key(1), 5)))


def test_apply_errors():
  model = _model('cnn4')
  params = model.init(jax.random.key(0))
  with pytest.raises(ValueError, match='need a PRNG'):
    model.apply(params, _batch(), deterministic=False)
  with pytest.raises(ValueError, match='expects inputs of shape'):
    model.apply(params, _batch(shape=(16, 16, 3)))
  with pytest.raises(ValueError, match='gateable layers'):
    model.apply(params, _batch(), gates={'dense': jnp.ones(3)})
  with pytest.raises(ValueError, match='must have shape'):
    model.apply(params, _batch(), gates={'conv3': jnp.ones(64)})
  # Every gate forced: no key needed even when training.
  model.apply(params, _batch(), deterministic=False,
              gates={'conv3': jnp.ones(128)})


@pytest.mark.parametrize('name', models.NAMES)
def test_jit_and_vmap_over_params_and_inputs(name):
  model = _model(name)
  clients = 3
  params = jax.vmap(model.init)(jax.random.split(jax.random.key(0), clients))
  xs = jax.random.normal(jax.random.key(1), (clients, 4) + DIGITS)
  keys = jax.random.split(jax.random.key(2), clients)
  step = jax.jit(jax.vmap(
      lambda p, x, k: model.apply(p, x, key=k, deterministic=False, tau=0.5)))
  logits, gates = step(params, xs, keys)
  assert logits.shape == (clients, 4, 3)
  for i in range(clients):
    one = jax.tree.map(lambda a: a[i], params)
    ref_logits, ref_gates = model.apply(one, xs[i], key=keys[i],
                                        deterministic=False, tau=0.5)
    np.testing.assert_allclose(logits[i], ref_logits, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[i], b),
                 gates, ref_gates)
  # Shared inputs, stacked parameters; and a traced temperature.
  shared = jax.jit(jax.vmap(lambda p, t: model.apply(
      p, xs[0], key=keys[0], deterministic=False, tau=t)[0]))
  assert shared(params, jnp.array([0.5, 1.0, 2.0])).shape == (clients, 4, 3)
