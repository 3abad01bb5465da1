"""Rounds of clients in budget tiers: the loop and the batched (vmap) mappings agree.

The multi-device case runs in a subprocess with 4 forced host devices
(``data_helpers.on_host_devices``).
"""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mg.federated import tiers
from mg.models import exit_heads, vit
from mg.reefl.algorithms import baselines, early_exit, reefl
from data_helpers import on_host_devices

CFG = vit.ViTConfig(image_size=8, patch_size=4, in_chans=1, dim=8, depth=2, heads=2,
                    num_exits=2, num_classes=3, init_std=0.0)


def _data():
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(60, 8, 8, 1)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 3, size=60), jnp.int32)
  counts = [7, 10, 5, 9, 6, 8]   # different step counts within a tier's chunk
  clients = [reefl.ClientData(jnp.asarray(np.arange(10) + 10 * i, jnp.int32), jnp.int32(n),
                              i % 2, i) for i, n in enumerate(counts)]
  return images, labels, clients


def test_chunks_group_by_tier():
  assert tiers.chunks([0, 1, 2, 3, 5], [0, 1, 0, 1, 0, 1], 2) == [(0, [0, 2]), (1, [1, 3]),
                                                                (1, [5])]
  assert tiers.default_group_size(10, 4) == 3
  assert tiers.resolve_mapping('auto', 'cpu') == 'loop'
  assert tiers.resolve_mapping('auto', 'gpu') == 'vmap'
  with pytest.raises(ValueError, match='mapping'):
    tiers.resolve_mapping('pmap')


def _algorithm(method):
  params = exit_heads.init(jax.random.PRNGKey(1), CFG)
  alg, _ = baselines.build(method, CFG, regime='full', batch_size=4, clip=1.0,
                           hp=early_exit.Hparams(rounds=4),
                           options=baselines.Options(scalefl_widths=(0.5, 1.0)), num_clients=6)
  return alg, params


@pytest.mark.parametrize('method', ['depthfl_feddyn', 'scalefl'])  # ReeFL: test_algorithm.py
def test_vmap_round_equals_the_loop_round(method):
  """Chunks of 2 (one padded), unequal step counts, FedDyn states and width slices."""
  images, labels, clients = _data()
  alg, params = _algorithm(method)
  sampled = np.array([0, 1, 2, 3, 5])
  states = {}
  for mapping in ('loop', 'vmap'):
    state = alg.init(params)
    for r in (1,):
      state, diag = tiers.train_round(alg, state, clients, images, labels, sampled,
                                      jax.random.PRNGKey(r), r, mapping, group_size=2)
    states[mapping] = (state, diag)
  (a, da), (b, db) = states['loop'], states['vmap']
  assert da['finite'] and db['finite'] and da['uploaded'] == db['uploaded']
  np.testing.assert_allclose(da['loss'], db['loss'], rtol=1e-5)
  for x, y in zip(jax.tree.leaves((a.params, a.opt_state)), jax.tree.leaves((b.params, b.opt_state))):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  assert not np.allclose(jax.tree.leaves(a.params)[0], jax.tree.leaves(params)[0])


_SHARDED = textwrap.dedent('''
    import json, sys
    sys.path.insert(0, 'tests')
    import jax, numpy as np
    from mg.federated import sharding, tiers
    import test_tiers

    images, labels, clients = test_tiers._data()
    alg, params = test_tiers._algorithm('depthfl_feddyn')
    sampled = np.array([0, 1, 2, 3, 5])
    key = jax.random.PRNGKey(1)
    want, want_diag = tiers.train_round(alg, alg.init(params), clients, images, labels,
                                        sampled, key, 1, 'loop')
    mesh = sharding.client_mesh()
    specs = []
    split_rows = tiers.split_rows
    def recording(tree, n):  # the batched program's outputs, before the server has them
      specs.extend(str(x.sharding.spec) for x in jax.tree.leaves(tree))
      return split_rows(tree, n)
    tiers.split_rows = recording
    images, labels = sharding.place((images, labels), mesh)
    got, got_diag = tiers.train_round(alg, alg.init(params), clients, images, labels, sampled,
                                      key, 1, 'vmap', group_size=2, mesh=mesh)
    leaves = zip(jax.tree.leaves((want.params, want.opt_state)),
                 jax.tree.leaves((got.params, got.opt_state)))
    print(json.dumps({
        'devices': jax.device_count(), 'specs': sorted(set(specs)),
        'max_abs_diff': max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                            for a, b in leaves),
        'loss': [want_diag['loss'], got_diag['loss']],
        'on_every_device': all(len(x.devices()) == 4 for x in jax.tree.leaves(got.params))}))
''')


def test_sharded_chunks_train_as_the_loop():
  """With 4 devices each vmapped chunk (2 clients, padded to 4) is split over them."""
  result = on_host_devices(_SHARDED, 4)
  assert result['devices'] == 4
  assert result['specs'] == ["P('clients',)"], result['specs']
  assert result['max_abs_diff'] < 1e-5, result
  np.testing.assert_allclose(*result['loss'], rtol=1e-5)
  assert result['on_every_device']
