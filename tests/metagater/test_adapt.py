"""Fast adaptation at targets: query-blind, two-stage masks, MetaSNIP (issue 5)."""

import jax
import jax.numpy as jnp
import numpy as np

from mg.metagater import adapt
from mg.metagater import methods as methods_lib
from mg import models
from mg.metagater import train as train_lib
from mg.federated import local


def _method(name, config, info):
  method = methods_lib.build(name, config, info)
  return method, method.model.init(jax.random.key(0))


def test_adaptation_never_reads_the_query_split(test_config, test_data):
  fed, _, info = test_data
  method, params = _method('metagater', test_config, info)
  fns = train_lib.make_target_fns(method)
  scrambled = fed.target_query._replace(
      y=(fed.target_query.y + 1) % info['num_classes'],
      x=jnp.zeros_like(fed.target_query.x))
  key = jax.random.key(7)
  a = train_lib.evaluate_targets(method, fns, params, fed.target_support,
                                 fed.target_query, key)
  b = train_lib.evaluate_targets(method, fns, params, fed.target_support, scrambled, key)
  # Same adapted model (the adaptation function never receives the query) ...
  adapted = fns[0](params, fed.target_support, 0, jax.random.fold_in(key, 0), 0.0)[0]
  again = fns[0](params, fed.target_support, 0, jax.random.fold_in(key, 0), 0.0)[0]
  jax.tree.map(np.testing.assert_array_equal, adapted, again)
  # ... scored against different query labels.
  assert not np.allclose(a.accuracy, b.accuracy)


def test_two_stage_moves_only_the_selected_subnetwork(test_config, test_data):
  fed, _, info = test_data
  method, params = _method('metagater', test_config, info)
  # Switch off half of conv3's channels for every input: zero groups, negative bias.
  out = params['phi']['conv3']['out']
  channels = out['bias'].shape[0]
  off = jnp.arange(channels) % 2 == 0
  params['phi']['conv3']['out'] = {'kernel': jnp.where(off, 0.0, out['kernel']),
                                   'bias': jnp.where(off, -50.0, out['bias'])}
  support = local.task_slice(fed.target_support, 0)
  new, keep = adapt.two_stage(method.model, params, support, jax.random.key(1), lr=0.1)
  assert not np.any(np.asarray(keep['conv3'])[np.asarray(off)])
  delta = jax.tree.map(lambda a, b: np.asarray(a - b), new['theta'], params['theta'])
  # Filters of switched-off channels and their input slices in the dense layer froze.
  assert np.all(delta['conv3']['kernel'][..., np.asarray(off)] == 0)
  assert np.all(delta['conv3']['bias'][np.asarray(off)] == 0)
  assert np.any(delta['conv3']['kernel'][..., ~np.asarray(off)] != 0)
  assert np.any(delta['conv1']['kernel'] != 0)
  assert not jax.tree.all(jax.tree.map(np.array_equal, new['phi'], params['phi']))
  # Stage I skipped: the gates stay the meta-gate's; Stage II uses them as they are.
  same, keep = adapt.two_stage(method.model, params, support, jax.random.key(1), lr=0.1,
                               gate_step=False)
  jax.tree.map(np.testing.assert_array_equal, same['phi'], params['phi'])
  assert not np.any(np.asarray(keep['conv3'])[np.asarray(off)])


def test_snip_prunes_the_requested_fraction(test_config, test_data):
  fed, _, info = test_data
  method, params = _method('metasnip', test_config, info)
  support = local.task_slice(fed.target_support, 0)
  new, kept = adapt.snip(method.model, params, support, jax.random.key(1), lr=0.1,
                         sparsity=0.3, layers=('conv3',))
  kernel = np.asarray(new['theta']['conv3']['kernel'])
  assert abs(float(kept) - 0.7) < 0.01
  assert abs((kernel == 0).mean() - 0.3) < 0.01


def test_evaluate_reports_sparsity_and_macs(test_config, test_data):
  fed, _, info = test_data
  method, params = _method('metagater', test_config, info)
  query = local.task_slice(fed.target_query, 0)
  full = adapt.evaluate(method.model, params, query)
  params['phi']['conv3']['out']['bias'] = -50.0 * jnp.ones_like(
      params['phi']['conv3']['out']['bias'])
  params['phi']['conv3']['out']['kernel'] = jnp.zeros_like(
      params['phi']['conv3']['out']['kernel'])
  none = adapt.evaluate(method.model, params, query)
  assert float(full.sparsity) < float(none.sparsity) == 1.0
  assert float(none.macs_ratio) < float(full.macs_ratio) <= 1.0 + 1e-6
  assert float(full.macs_ratio) > 0.0
  assert models.macs(method.model) > 0


def test_snip_filters_prunes_whole_filters_at_channel_sparsity(test_config, test_data):
  fed, _, info = test_data
  method, params = _method('metasnip_filters', test_config, info)
  support = local.task_slice(fed.target_support, 0)
  new, keep = adapt.snip_filters(method.model, params, support, jax.random.key(1), lr=0.1,
                                 sparsity=0.25, layers=('conv3',))
  kept = np.asarray(keep['conv3'])
  assert kept.sum() == round(0.75 * kept.size)
  theta = jax.tree.map(np.asarray, new['theta'])
  # Pruned filters are zero whole (kernel and bias), and so are their input rows in
  # the next (dense) layer; kept filters moved.
  assert np.all(theta['conv3']['kernel'][..., ~kept] == 0)
  assert np.all(theta['conv3']['bias'][~kept] == 0)
  assert np.all(np.any(theta['conv3']['kernel'][..., kept] != 0, axis=(0, 1, 2)))
  dense = method.model.next_layer('conv3').name
  rows = np.tile(kept, theta[dense]['kernel'].shape[0] // kept.size)
  assert np.all(theta[dense]['kernel'][~rows] == 0)
  # Its score: channel sparsity, and MACs that dense hardware saves.
  fns = train_lib.make_target_fns(method)
  scores = train_lib.evaluate_targets(method, fns, params, fed.target_support,
                                      fed.target_query, jax.random.key(2), sparsity=0.25)
  assert scores.sparsity_kind == 'channel'
  np.testing.assert_allclose(scores.sparsity, 0.25, atol=1.0 / kept.size)
  assert scores.macs_ratio < 1.0


def test_perfedavg_adapts_with_its_own_alpha(test_config, test_data):
  config = test_config.copy_and_resolve_references()
  config.adapt.lr = 0.5
  config.per_method.perfedavg_fo.alpha = 0.02
  _, _, info = test_data
  fo = methods_lib.build('perfedavg_fo', config, info)
  hf = methods_lib.build('perfedavg_hf', config, info)
  assert fo.adapt.keywords['lr'] == 0.02 == fo.hparams['alpha']
  assert hf.adapt.keywords['lr'] == config.perfedavg.alpha_hf == hf.hparams['alpha']
  assert methods_lib.build('fedavg', config, info).adapt.keywords['lr'] == 0.5
