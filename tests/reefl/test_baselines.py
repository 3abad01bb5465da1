"""The ReeFL paper's baselines: each rule on toy numbers, and the loop end to end."""

import json

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.reefl import test as reefl_test
import host_rules
from mg.federated import aggregation
from mg.reefl import config as reefl_config
from mg.reefl import run as reefl_run
from mg.federated import server as server_lib
from mg.reefl.algorithms import depthfl, early_exit, exclusivefl, inclusivefl, scalefl
from mg.federated.mapping import ClientOutput
from mg.models import exit_heads, vit
from mg.models.vit import flatten

TINY = vit.ViTConfig(image_size=8, patch_size=4, in_chans=1, dim=8, depth=4, heads=2,
                     num_exits=2, num_classes=3, init_std=0.0)


def _a(*v):
  return np.array(v, np.float32)


def _fake_params(depth, exits):
  """A parameter tree shaped like ``exit_heads.init``'s, one small leaf per layer."""
  leaf = lambda *lead: {'kernel': jnp.zeros(lead + (1,)), 'bias': jnp.zeros(lead + (1,))}
  return {'patch': leaf(), 'cls': jnp.zeros((1,)),
          'blocks': {'q': leaf(depth), 'fc1': leaf(depth)},
          'heads': {str(e): {'dense': leaf()} for e in range(exits)}}


# ------------------------------------------------------------------ ExclusiveFL


def test_exclusivefl_samples_only_full_budget_clients():
  tiers = [i % 4 for i in range(100)]
  picks = [exclusivefl.sample_clients(0, r, tiers, 10) for r in (1, 2)]
  for p in picks:
    assert len(p) == 10 and len(set(p)) == 10 and all(tiers[i] == 3 for i in p)
  assert not np.array_equal(picks[0], picks[1])
  assert np.array_equal(picks[0], exclusivefl.sample_clients(0, 1, tiers, 10))
  # Fewer eligible clients than the round asks for: all of them.
  assert list(exclusivefl.sample_clients(0, 1, [0, 1, 1, 0, 1], 4)) == [1, 2, 4]


# ------------------------------------------------------------------ InclusiveFL


def test_inclusivefl_layers_by_tier():
  cfg = TINY._replace(depth=8, num_exits=4, dim=2, heads=1)   # exits after 1, 3, 5, 7
  assert [inclusivefl.personal_blocks(cfg, t) for t in range(4)] == [[1], [3], [5], [6, 7]]
  assert [inclusivefl.momentum_blocks(cfg, t) for t in range(4)] == [[], [2, 3], [4, 5], [6, 7]]
  params = _fake_params(8, 4)
  paths = inclusivefl.personal_paths(cfg, params, 0, 'full')
  assert {p.split('/')[0] + '/' + p.split('/')[1] for p in paths} == {'blocks/1', 'heads/0'}


def _inclusivefl(g, personal, momentum, groups, cfg, beta=0.2):
  """The device rule on host-style groups ``{tier: [(flat upload, weight)]}``."""
  rows = [(t, u, w) for t in sorted(groups) for u, w in groups[t]]
  uploads = {k: jnp.stack([jnp.asarray(u.get(k, g[k])) for _, u, _ in rows]) for k in g}
  return jax.jit(inclusivefl.aggregate, static_argnums=(6, 7))(
      g, personal, momentum, uploads, jnp.asarray([w for _, _, w in rows], jnp.float32),
      jnp.asarray([t for t, _, _ in rows], jnp.int32), cfg, beta)


def test_inclusivefl_matches_the_float64_host_rule():
  cfg = TINY._replace(depth=8, num_exits=4)
  rng = np.random.default_rng(1)
  params = _fake_params(8, 4)
  keys = list(flatten(params))
  g = {k: rng.normal(size=(3,)).astype(np.float32) for k in keys}
  extra = inclusivefl.init_extra(cfg, params, 'full')
  personal = [{k: rng.normal(size=(3,)).astype(np.float32) for k in p} for p in extra['personal']]
  momentum = [{k: rng.normal(size=(3,)).astype(np.float32) for k in m} for m in extra['momentum']]
  groups = {}
  for t, w in ((0, 30.), (0, 55.), (1, 80.), (3, 41.), (3, 80.), (3, 12.)):  # tier 2 unsampled
    own = [k for k in keys if inclusivefl.holds(k, t, cfg)]
    groups.setdefault(t, []).append(({k: rng.normal(size=(3,)).astype(np.float32) for k in own}, w))
  got = _inclusivefl(g, personal, momentum, groups, cfg)
  want = host_rules.inclusivefl_aggregate(g, personal, momentum, groups, cfg)
  rel = lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64) - b) /
                                  np.maximum(np.abs(np.asarray(b, np.float64)), 1e-30)))
  for k in g:
    assert rel(got[0][k], want[0][k]) <= 1e-6, k
  for t in range(4):
    for k in want[1][t]:
      assert rel(got[1][t][k], want[1][t][k]) <= 1e-6, (t, k)
    for k in want[2][t]:
      np.testing.assert_allclose(got[2][t][k], want[2][t][k], rtol=1e-6, atol=1e-30)


def test_inclusivefl_momentum_distillation_on_toy_numbers():
  cfg = TINY                                          # D = 4, E = 2: exits after 1, 3
  g = {'patch/bias': _a(0.), 'blocks/0/q/kernel': _a(0.), 'blocks/1/q/kernel': _a(0.),
       'blocks/2/q/kernel': _a(0.), 'blocks/3/q/kernel': _a(0.),
       'heads/0/dense/bias': _a(0.), 'heads/1/dense/bias': _a(0.)}
  personal = [{'blocks/1/q/kernel': _a(10.), 'heads/0/dense/bias': _a(1.)},
              {'blocks/2/q/kernel': _a(20.), 'blocks/3/q/kernel': _a(30.),
               'heads/1/dense/bias': _a(2.)}]
  momentum = [{}, {'q/kernel': _a(5.)}]
  t0 = ['patch/bias', 'blocks/0/q/kernel', 'blocks/1/q/kernel', 'heads/0/dense/bias']
  up = lambda keys, v: {k: _a(v) for k in keys}
  groups = {0: [(up(t0, 2.), 1.0), (up(t0, 6.), 3.0)],          # example-weighted: 5
            1: [(up(list(g)[:5] + ['heads/1/dense/bias'], 8.), 7.0)]}
  new, pers, mom = _inclusivefl(g, personal, momentum, groups, cfg, beta=0.2)
  # Tier 0's top block: start 10, mean 5, g = 5 -> 0.2 * 5 (tier 1's old momentum) + 0.8 * 5.
  np.testing.assert_allclose(pers[0]['blocks/1/q/kernel'], 10 - (0.2 * 5 + 0.8 * 5))
  np.testing.assert_allclose(pers[0]['heads/0/dense/bias'], 5.0)   # heads: no momentum
  # Shared layers: tiers weighted by their numbers of clients (2 and 1).
  np.testing.assert_allclose(new['blocks/0/q/kernel'], (2 * 5 + 1 * 8) / 3)
  np.testing.assert_allclose(new['patch/bias'], (2 * 5 + 1 * 8) / 3)
  np.testing.assert_allclose(new['blocks/1/q/kernel'], 8.0)        # personal to tier 0 only
  np.testing.assert_allclose(new['blocks/3/q/kernel'], 0.0)        # personal to tier 1
  np.testing.assert_allclose(pers[1]['blocks/3/q/kernel'], 8.0)    # the last tier: no momentum
  # Tier 1's new momentum: mean update of its top D/E blocks, (20-8 + 30-8) / 2.
  np.testing.assert_allclose(mom[1]['q/kernel'], 17.0)
  # A tier nobody sampled has its momentum reset.
  _, _, mom = _inclusivefl(g, personal, momentum, {0: groups[0]}, cfg)
  np.testing.assert_allclose(mom[1]['q/kernel'], 0.0)


# ------------------------------------------------------------------- FedDyn


def test_feddyn_server_step_on_toy_numbers():
  g = {'a': _a(1.), 'b': _a(7.)}
  h = {'a': _a(0.), 'b': _a(0.5)}
  uploads = {'a': jnp.stack([_a(3.), _a(5.)]), 'b': jnp.stack([_a(0.), _a(0.)])}
  held = {'a': jnp.array([True, True]), 'b': jnp.array([False, False])}
  new, h2 = aggregation.feddyn(g, h, uploads, held, 10, 0.1)
  # mean 4; h = 0 - 0.1 * 2 * (4 - 1) / 10 = -0.06; theta = 4 + 0.06 / 0.1
  np.testing.assert_allclose(h2['a'], -0.06, rtol=1e-6)
  np.testing.assert_allclose(new['a'], 4.6, rtol=1e-6)
  assert float(new['b'][0]) == 7.0 and float(h2['b'][0]) == 0.5    # nobody held it


def test_feddyn_client_terms_and_state_by_client_id():
  prev, anchor, theta = {'w': _a(0.5)}, {'w': _a(1.)}, {'w': jnp.asarray(_a(2.))}
  grad = jax.grad(lambda t: early_exit.feddyn_penalty(t, prev, anchor, 0.1))(theta)
  np.testing.assert_allclose(grad['w'], -0.5 + 0.1 * (2 - 1), rtol=1e-6)
  np.testing.assert_allclose(early_exit.feddyn_client_state(prev, theta, anchor, 0.1)['w'], 0.4)
  params = _fake_params(4, 2)
  spec = depthfl.feddyn_spec(TINY, 'full', num_clients=5, alpha=0.1)
  extra = depthfl.feddyn_extra(params, 'full', 5)
  train = early_exit.split(traverse_util.flatten_dict(params, sep='/'), 'full')[0]
  table = early_exit.held_table(spec, params, extra, 2, 'full')
  trees = aggregation.stack_clients([train, train])
  states = {k: jnp.stack([jnp.full_like(v, 2.0), jnp.full_like(v, -1.0)]) for k, v in train.items()}
  batch = early_exit.Uploads(trees, aggregation.gather_masks(table, jnp.array([0, 0])),
                             jnp.ones((2,)), jnp.array([0, 0]), jnp.array([1, 3]), states)
  _, extra = spec.server(train, extra, batch)
  rows = np.asarray(extra['g']['patch/bias'])[:, 0]
  np.testing.assert_allclose(rows, [0, 2, 0, -1, 0])
  assert float(jnp.abs(extra['g']['heads/1/dense/bias']).max()) == 0.0   # tier 0 lacks it
  block_rows = np.asarray(extra['g']['blocks/q/bias'])[:, :, 0]           # (clients, blocks)
  np.testing.assert_allclose(block_rows[1], [2, 2, 0, 0])                 # tier 0: blocks 0, 1


# -------------------------------------------------------------------- losses


def _kl(p, q):
  return float(np.sum(p * (np.log(p) - np.log(q))))


def test_depthfl_mutual_kd_and_scalefl_forward_kd():
  logits = jnp.asarray([[[1.0, 0.0, -1.0]], [[0.0, 2.0, 0.5]], [[0.3, 0.3, 0.9]]])
  w = jnp.ones((1,))
  p = np.asarray(jax.nn.softmax(logits, -1))[:, 0]
  want = sum(_kl(p[j], p[i]) for i in range(3) for j in range(3) if i != j) / 2
  np.testing.assert_allclose(early_exit.kd_all(logits, w, 1.0), want, rtol=1e-5)
  p3 = np.asarray(jax.nn.softmax(logits / 3, -1))[:, 0]
  want = 9 * (_kl(p3[2], p3[0]) + _kl(p3[2], p3[1]))
  np.testing.assert_allclose(early_exit.kd_forward(logits, w, 3.0), want, rtol=1e-5)
  assert float(early_exit.kd_all(logits[:1], w, 1.0)) == 0.0
  assert float(early_exit.kd_forward(logits[:1], w, 3.0)) == 0.0
  # The teacher's logits get no gradient from the forward KD term.
  grad = jax.grad(lambda l: early_exit.kd_forward(l, w, 3.0))(logits)
  assert float(jnp.abs(grad[2]).max()) == 0.0 and float(jnp.abs(grad[0]).max()) > 0
  # Masked to a tier's exits, both terms are those of the tier's logits alone.
  for valid in ([True, True, False], [True, False, False]):
    n = sum(valid)
    for kd in (early_exit.kd_all, early_exit.kd_forward):
      np.testing.assert_allclose(kd(logits, w, 3.0, jnp.asarray(valid)), kd(logits[:n], w, 3.0),
                                 rtol=1e-6)


def test_one_program_for_every_tier_trains_as_the_per_tier_programs():
  """DepthFL + FedDyn at tier 0: the masked exits, the mutual KD and the client state."""
  cfg = TINY
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(12, 8, 8, 1)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 3, size=12), jnp.int32)
  params = exit_heads.init(jax.random.PRNGKey(1), cfg)
  spec = depthfl.feddyn_spec(cfg, 'full', num_clients=3, alpha=0.1)
  local = early_exit.LocalConfig(batch_size=4, kd_mode='all', feddyn_alpha=0.1,
                                 weight_decay=1e-3)
  # The spec's one program for every tier, and one for the tier (the truncated model).
  per_tier = spec._replace(forward_any=None, program_key=lambda t: ('own', t))
  algs = [early_exit.algorithm('depthfl_feddyn', s, regime='full', local=local,
                               num_exits=cfg.num_exits, hp=early_exit.Hparams(rounds=4),
                               extra=lambda p: depthfl.feddyn_extra(p, 'full', 3))
          for s in (spec, per_tier)]
  state = algs[0].init(params)
  state = state._replace(opt_state=jax.tree.map(  # nonzero FedDyn client states
      lambda x: x + 0.01 * jnp.arange(x.size).reshape(x.shape) / x.size, state.opt_state))
  data = early_exit.reefl.ClientData(jnp.arange(12, dtype=jnp.int32), jnp.int32(10), 0, 2)
  one, own = (a.client(a.broadcast(state, 0), data, images, labels, jax.random.PRNGKey(5), 3)
              for a in algs)
  assert set(one.tree) == set(own.tree)       # both at the global shapes
  held = aggregation.gather_masks(early_exit.held_table(spec, params, state.opt_state, 2, 'full'),
                                  0)
  assert not held['heads/1/dense/kernel'] and list(held['blocks/q/kernel']) == [True, True, False,
                                                                                False]
  for k in own.tree:   # what tier 0 holds (and uploads)
    m = np.broadcast_to(aggregation.expand(held[k], own.tree[k].ndim), own.tree[k].shape)
    np.testing.assert_allclose(np.asarray(one.tree[k])[m], np.asarray(own.tree[k])[m],
                               rtol=2e-5, atol=2e-6, err_msg=k)
    np.testing.assert_allclose(np.asarray(one.metrics['state'][k])[m],
                               np.asarray(own.metrics['state'][k])[m], rtol=2e-5, atol=2e-6,
                               err_msg=k)
  np.testing.assert_allclose(one.metrics['loss'], own.metrics['loss'], rtol=1e-5)


def test_last_only_mask_trains_the_tiers_own_exit():
  """InclusiveFL's mask in the one program: the loss of the tier's own exit alone."""
  logits = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 5))
  labels, w = jnp.arange(4) % 5, jnp.ones((4,))
  for tier in range(3):
    mask = jnp.arange(3) == tier
    got, _ = early_exit.local_loss(logits, labels, w, 1, 1.0, 1.0, mask)   # mode 'all'
    want, _ = early_exit.local_loss(logits[tier:tier + 1], labels, w, 1, 1.0, 1.0)
    np.testing.assert_allclose(got, want, rtol=1e-6)


# -------------------------------------------------------------------- ScaleFL


def test_scalefl_leading_slices_with_attention_rounded_to_heads():
  mnist = TINY._replace(dim=64, heads=4)
  assert exit_heads.widths(mnist, 0.4) == (25, 28, 100)            # 25 -> 28 = 4 heads x 7
  assert exit_heads.widths(mnist, 0.55) == (35, 36, 140)
  cfg = TINY._replace(dim=16, heads=4, depth=2)                     # exits after 0, 1
  assert exit_heads.widths(cfg, 0.4) == (6, 8, 24)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32),
                        jax.eval_shape(lambda: exit_heads.init(jax.random.PRNGKey(0), cfg)))
  small = flatten(exit_heads.sliced_tier(params, 1, cfg, 0.4))
  full = flatten(params)
  shapes = {k: v.shape for k, v in small.items()}
  assert shapes['blocks/1/q/kernel'] == (6, 8) and shapes['blocks/1/proj/kernel'] == (8, 6)
  assert shapes['blocks/1/fc1/kernel'] == (6, 24) and shapes['pos'] == (5, 6)
  assert shapes['heads/0/dense/kernel'] == (6, 3) and shapes['heads/1/ln/scale'] == (6,)
  np.testing.assert_array_equal(small['blocks/1/q/kernel'], full['blocks/1/q/kernel'][:6, :8])
  np.testing.assert_array_equal(small['patch/kernel'], full['patch/kernel'][..., :6])
  assert 'blocks/1/q/kernel' not in flatten(exit_heads.sliced_tier(params, 0, cfg, 0.4))
  out = exit_heads.apply(exit_heads.sliced_tier(params, 1, cfg, 0.4), jnp.ones((2, 8, 8, 1)),
                         cfg, tier=1)
  assert len(out) == 2 and out[1].shape == (2, 3)


def test_scalefl_count_mean_over_overlapping_slices():
  g = {'w': np.full((3, 3), 9.0, np.float32)}
  trees = {'w': jnp.stack([jnp.pad(jnp.ones((2, 2)), [(0, 1), (0, 1)]),
                           jnp.pad(jnp.full((3, 2), 3.0), [(0, 0), (0, 1)])])}
  held = {'w': jnp.stack([early_exit._slice_mask((2, 2), (3, 3)),
                          early_exit._slice_mask((3, 2), (3, 3))])}
  batch = early_exit.Uploads(trees, held, jnp.array([80.0, 20.0]), jnp.array([0, 1]),
                             jnp.array([0, 1]))
  new = np.asarray(scalefl.count_mean(g, {}, batch)[0]['w'])
  np.testing.assert_allclose(new[:2, :2], 2.0)   # (1 + 3) / 2: a count, not example weights
  np.testing.assert_allclose(new[2, :2], 3.0)
  np.testing.assert_allclose(new[:, 2], 9.0)     # nobody's slice: kept


# ----------------------------------------------------------------- end to end


def test_baselines_run_through_the_reefl_loop_and_resume(tmp_path, reefl_programs):
  config = reefl_test.get_config()
  config.methods = ('exclusivefl', 'depthfl_feddyn', 'scalefl')
  config.baselines.scalefl_widths = (0.5, 1.0)
  workdir = str(tmp_path / 'run')
  doc = reefl_run.run(config, workdir, programs=reefl_programs)
  # One compiled program for every tier of ExclusiveFL and DepthFL (shared), one per
  # tier for ScaleFL (its tiers differ in width), never recompiled over the rounds'
  # new learning rates and KD weights.
  scope = reefl_programs['baselines']  # shared with other tests: read this config's keys
  cfg = reefl_config.model_config(config, modulation=False)
  compiled = {k: p for k, p in scope.items()
              if k[0] not in ('broadcast', 'held', 'server') and k[1:3] == ('full', cfg)}
  assert sorted(k[0] for k in compiled) == ['exit_heads', 'scalefl', 'scalefl']
  assert all(p._cache_size() == 1 for p in compiled.values())
  # and each method's server program, compiled once
  servers = {k: p for k, p in scope.items() if k[0] == 'server' and k[1] in config.methods}
  assert {k[1] for k in servers} == set(config.methods)
  assert all(p._cache_size() == 1 for p in servers.values())
  rows = {r['method']: r for r in doc['rows']}
  for r in rows.values():
    assert len(r['exit_accuracy_mean']) == 2 and 0.0 <= r['accuracy_mean'] <= 1.0
  # ExclusiveFL: only the 4 full-budget clients of 8 train, each uploads the whole model.
  full = doc['tiers']['full/exclusivefl']
  assert rows['exclusivefl']['upload_bytes_per_round'] == 4 * 4 * full[-1]['uploaded']
  # ScaleFL's narrower first tier holds fewer parameters than the head baselines' tier.
  assert doc['tiers']['full/scalefl'][0]['held'] < doc['tiers']['full/depthfl_feddyn'][0]['held']
  assert [t['held'] for t in doc['tiers']['full/scalefl']] == rows['scalefl']['held_per_tier']
  again = reefl_run.run(config, workdir)
  assert json.dumps(again['rows']) == json.dumps(doc['rows'])
