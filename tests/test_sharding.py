"""Mapping clients onto devices: fused one-step rounds, padding, sharding, placement.

The multi-device case runs in a subprocess with 8 forced host devices (the flag
must be set before JAX starts; this test session has one device).
"""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mg.metagater import methods as methods_lib
from mg.federated import backend
from mg.federated import mapping
from mg.federated import sharding
from data_helpers import on_host_devices


def _trees_close(a, b, **kw):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **kw), a, b)


def _setup(name, test_config, test_data, **meta):
  fed, _, info = test_data
  config = test_config.copy_and_resolve_references()
  for field, value in meta.items():
    config.meta[field] = value
  method = methods_lib.build(name, config, info)
  state = method.algorithm.init(method.model.init(jax.random.key(0)), **method.hparams)
  return method, state, fed.train, int(fed.train.count.shape[0])


def _run(method, state, data, num, strategy, tasks=3, **kw):
  round_fn = mapping.make_round(method.algorithm, num_tasks=num, tasks_per_round=tasks,
                                strategy=strategy, **kw)
  return round_fn, round_fn(state, data, jax.random.key(3))


@pytest.mark.parametrize('name', ['metagater', 'fedavg'])
def test_fused_round_equals_per_task_round(name, test_config, test_data):
  """K = 1: one batched step on the weighted mean loss = mean of the clients' steps."""
  method, state, data, num = _setup(name, test_config, test_data)
  _, (ref_state, ref_diag) = _run(method, state, data, num, 'unroll')
  round_fn, (got_state, got_diag) = _run(method, state, data, num, 'fused')
  assert round_fn.mapping == 'fused' and round_fn.note == ''
  _trees_close(ref_state.params, got_state.params, rtol=2e-4, atol=2e-5)
  np.testing.assert_allclose(got_diag['loss'], ref_diag['loss'], rtol=1e-5)
  round_fn(got_state, data, jax.random.key(4))
  assert round_fn._cache_size() == 1


def test_fused_falls_back_where_it_would_not_be_exact(test_config, test_data):
  # Per-FedAvg's client is two gradient steps at different points: no fused form.
  method, state, data, num = _setup('perfedavg_fo', test_config, test_data)
  _, (ref, _) = _run(method, state, data, num, 'unroll', tasks=2)
  round_fn, (got, _) = _run(method, state, data, num, 'fused', tasks=2, fallback='unroll')
  assert round_fn.mapping == 'unroll'
  assert '0 local_solve calls' in round_fn.note
  _trees_close(ref.params, got.params, rtol=0, atol=0)
  # K = 2 local steps.
  method, state, data, num = _setup('metagater', test_config, test_data, local_steps=2)
  round_fn, _ = _run(method, state, data, num, 'fused', tasks=2, fallback='vmap')
  assert round_fn.mapping == 'vmap' and 'K = 1' in round_fn.note


def test_fused_refuses_a_client_that_changes_its_solution(test_config, test_data):
  method, state, data, num = _setup('metagater', test_config, test_data)
  alg = method.algorithm

  def doubled(shared, task, key):
    out = alg.client(shared, task, key)
    return out._replace(tree=jax.tree.map(lambda z: 2.0 * z, out.tree))

  changed = alg._replace(client=doubled)
  round_fn = mapping.make_round(changed, num_tasks=num, tasks_per_round=2, strategy='fused',
                                fallback='unroll')
  round_fn(state, data, jax.random.key(0))
  assert round_fn.mapping == 'unroll' and 'changes the local solution' in round_fn.note


@pytest.mark.parametrize('strategy', ['vmap', 'unroll', 'scan', 'fused'])
def test_zero_weight_dummy_tasks_change_nothing(strategy, test_config, test_data):
  method, state, data, num = _setup('fedavg', test_config, test_data)
  shared = method.algorithm.broadcast(state)
  ids = jnp.array([1, 4], jnp.int32)
  keys = jax.random.split(jax.random.key(7), 2)
  padded_ids = jnp.array([1, 4, 2, 5], jnp.int32)
  padded_keys = jnp.concatenate([keys, jax.random.split(jax.random.key(8), 2)])
  valid = jnp.array([1.0, 1.0, 0.0, 0.0])
  mapped = jax.jit(mapping.map_clients(method.algorithm, strategy))
  ref_tree, ref_metrics = mapped(shared, data, ids, keys)
  tree, metrics = mapped(shared, data, padded_ids, padded_keys, valid)
  _trees_close(ref_tree, tree, rtol=1e-5, atol=1e-6)
  _trees_close(ref_metrics, metrics, rtol=1e-5, atol=1e-6)


def test_padding_to_the_device_count():
  assert sharding.padded_size(3, None) == 3
  mesh = sharding.client_mesh()
  assert sharding.padded_size(3, mesh) == 3  # one device here
  ids, keys = sharding.pad_tasks(jnp.array([4, 2, 7]), jax.random.split(jax.random.key(0), 3), 8)
  assert ids.tolist() == [4, 2, 7, 0, 0, 0, 0, 0] and keys.shape == (8,)
  assert sharding.task_valid(3, 8).tolist() == [1, 1, 1, 0, 0, 0, 0, 0]


@pytest.mark.parametrize('strategy', ['fused', 'vmap', 'loop'])
def test_a_round_moves_no_data_through_the_host(strategy, test_config, test_data):
  method, state, data, num = _setup('metagater', test_config, test_data)
  mesh = sharding.client_mesh() if strategy in mapping.SHARDABLE else None
  data, state = sharding.place((data, state), mesh)
  key = jax.device_put(jax.random.key(1))
  round_fn = mapping.make_round(method.algorithm, num_tasks=num, tasks_per_round=2,
                                strategy=strategy, mesh=mesh)
  with jax.transfer_guard('disallow'):
    state, diagnostics = round_fn(state, data, key)   # compiles, then runs
    state, diagnostics = round_fn(state, data, key)
    jax.block_until_ready((state, diagnostics))
  assert bool(diagnostics['finite'])


def test_default_strategy_per_backend():
  assert mapping.default_strategy('cpu', 'cnn4', local_steps=1) == 'loop'
  assert mapping.default_strategy('cpu', 'cnn7', local_steps=5) == 'loop'
  assert mapping.default_strategy('cpu', 'mlp', local_steps=5, tasks_per_round=5) == 'vmap'
  assert mapping.default_strategy('cpu', 'mlp', local_steps=5, tasks_per_round=20) == 'loop'
  assert mapping.default_strategy('gpu', 'cnn4', local_steps=1) == 'fused'
  assert mapping.default_strategy('gpu', 'cnn4', local_steps=5) == 'vmap'
  assert mapping.default_strategy('cpu', 'cnn4', local_steps=5, devices=8) == 'vmap'
  assert mapping.fallback_strategy('cpu', 'cnn4') == 'unroll'  # traceable
  assert mapping.fallback_strategy('cpu', 'mlp') == 'vmap'
  assert mapping.resolve_strategy('scan', 'cnn4') == 'scan'
  with pytest.raises(ValueError, match='meta.mapping'):
    mapping.resolve_strategy('pmap', 'cnn4')
  with pytest.raises(ValueError, match='cannot shard'):
    mapping.make_round(None, num_tasks=4, tasks_per_round=2, strategy='unroll',
                       mesh=sharding.client_mesh())


def test_cpu_flags_keep_a_users_own_setting():
  flags = backend.cpu_flags('--xla_force_host_platform_device_count=8')
  assert '--xla_force_host_platform_device_count=8' in flags.split()
  assert '--xla_cpu_experimental_ynn_fusion_type=' in flags.split()
  mine = '--xla_cpu_experimental_ynn_fusion_type=individual_convolution'
  assert backend.cpu_flags(mine).split() == [mine]


def test_each_system_runs_with_its_own_cpu_options():
  from configs.reefl import test as reefl_test  # pylint: disable=g-import-not-at-top
  from mg import systems  # pylint: disable=g-import-not-at-top
  assert systems.cpu_options(reefl_test.get_config()) == {}   # the ViT: XLA's default
  assert backend.cpu_flags('', systems.cpu_options(reefl_test.get_config())) == ''
  assert systems.cpu_options({}) is None                      # MetaGater: CPU_FLAGS
  assert 'ynn_fusion_type=' in backend.cpu_flags('', systems.cpu_options({}))


def test_initialize_distributed_only_when_enabled(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, 'is_initialized', lambda: False)
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kw: calls.append(kw))
  assert not sharding.initialize_distributed(None)
  assert not sharding.initialize_distributed({'enabled': False})
  assert sharding.initialize_distributed(
      {'enabled': True, 'coordinator_address': 'host:1234', 'num_processes': 2,
       'process_id': 1, 'local_device_ids': None})
  assert calls == [{'coordinator_address': 'host:1234', 'num_processes': 2,
                    'process_id': 1}]


_SHARDED = textwrap.dedent('''
    import json
    import jax
    import numpy as np
    from configs import test as test_config
    from mg import data as data_lib
    from mg.metagater import methods as methods_lib
    from mg.federated import mapping, sharding

    config = test_config.get_config()
    fed, _, info = data_lib.build(config.data, config.seed)
    mesh = sharding.client_mesh()
    result = {'devices': jax.device_count()}
    # FedAvg weights its clients by sample count: the dummies' zero weight must still win.
    for name, strategy in (('metagater', 'vmap'), ('fedavg', 'fused')):
      method = methods_lib.build(name, config, info)
      state = method.algorithm.init(method.model.init(jax.random.key(0)), **method.hparams)
      num = int(fed.train.count.shape[0])
      single = mapping.make_round(method.algorithm, num_tasks=num, tasks_per_round=3,
                                  strategy=strategy)
      sharded = mapping.make_round(method.algorithm, num_tasks=num, tasks_per_round=3,
                                   strategy=strategy, mesh=mesh)
      key = jax.random.key(5)
      data_1, state_1 = sharding.place((fed.train, state))
      data_8, state_8 = sharding.place((fed.train, state), mesh)
      want, want_diag = single(state_1, data_1, key)
      with jax.transfer_guard('disallow'):
        got, got_diag = sharded(state_8, data_8, jax.device_put(key, sharding.replicated(mesh)))
      hlo = sharded.lower(state_8, data_8, key).compile().as_text()
      leaves = zip(jax.tree.leaves(want.params), jax.tree.leaves(got.params))
      result[name + '/' + strategy] = {
          'slots': sharded.slots, 'mapping': sharded.mapping,
          'max_abs_diff': max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                              for a, b in leaves),
          'loss': [float(want_diag['loss']), float(got_diag['loss'])],
          'all_reduce': 'all-reduce' in hlo,
          'replicated': all(x.sharding.is_fully_replicated and len(x.devices()) == 8
                            for x in jax.tree.leaves(got.params)),
      }
    print(json.dumps(result))
''')


def test_sharded_round_equals_single_device_round():
  result = on_host_devices(_SHARDED, 8)
  assert result.pop('devices') == 8
  for case, r in result.items():
    assert r['slots'] == 8, case               # 3 sampled tasks + 5 zero-weight dummies
    assert r['mapping'] == case.split('/')[1], case
    assert r['max_abs_diff'] < 1e-5, (case, r)
    np.testing.assert_allclose(*r['loss'], rtol=1e-5, err_msg=case)
    assert r['all_reduce'] and r['replicated'], (case, r)
