"""ReeFL's local loss, schedules and compiled local training (aggregation: tests/test_aggregation.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mg.federated import tiers
from mg.reefl.algorithms import reefl
from mg.models import vit

init = jax.jit(vit.init, static_argnums=1)
CFG = vit.ViTConfig(image_size=8, patch_size=4, in_chans=1, dim=16, depth=2,
                    heads=2, num_exits=2, num_classes=3)


def test_kd_ramp_values():
  assert reefl.kd_weight(1, 300) == pytest.approx(math.exp(-5 * (299 / 300) ** 2))
  assert reefl.kd_weight(150, 300) == pytest.approx(math.exp(-1.25))
  assert reefl.kd_weight(300, 300) == 1.0
  assert reefl.kd_weight(1000, 300) == 1.0


def test_cosine_learning_rate_as_the_code():
  assert reefl.learning_rate(0, 100, 0.05, 0.001) == pytest.approx(0.05)
  assert reefl.learning_rate(50, 100, 0.05, 0.001) == pytest.approx(0.025)
  assert reefl.learning_rate(100, 100, 0.05, 0.001) == 0.001  # floored


def test_teacher_ema_updates_before_choosing():
  local = reefl.LocalConfig()
  ema, t = reefl.choose_teacher(jnp.zeros(2), jnp.array([2.0, 1.0]), local)
  np.testing.assert_allclose(ema, [0.4, 0.2], rtol=1e-6)
  assert int(t) == 1
  ema, t = reefl.choose_teacher(ema, jnp.array([0.5, 3.0]), local)
  np.testing.assert_allclose(ema, [0.42, 0.76], rtol=1e-6)
  assert int(t) == 0
  _, t = reefl.choose_teacher(ema, jnp.array([0.5, 3.0]), local._replace(kd_mode='last'))
  assert int(t) == 1


def test_kd_terms_against_numpy():
  logits = jnp.array(np.random.default_rng(0).normal(size=(3, 4, 5)), jnp.float32)
  w = jnp.array([1.0, 1.0, 1.0, 0.0])
  got = np.asarray(reefl.kd_terms(logits, 2, w, 1.0))
  p = np.exp(np.asarray(logits, np.float64))
  p /= p.sum(-1, keepdims=True)
  want = [np.sum(p[2] * (np.log(p[2]) - np.log(p[e])), -1)[:3].mean() for e in range(3)]
  np.testing.assert_allclose(got[:2], want[:2], rtol=1e-5)
  assert got[2] == 0.0


def test_single_exit_tier_has_no_kd():
  logits = jnp.array(np.random.default_rng(1).normal(size=(1, 4, 3)), jnp.float32)
  y, w = jnp.array([0, 1, 2, 0]), jnp.ones(4)
  loss, _ = reefl.local_loss(logits, y, w, jnp.zeros(1), 1.0, reefl.LocalConfig())
  np.testing.assert_allclose(loss, reefl.exit_cross_entropies(logits, y, w)[0], rtol=1e-6)
  # Two exits: the KD term is there.
  logits2 = jnp.concatenate([logits, logits[::-1] * 2.0])
  loss2, _ = reefl.local_loss(logits2, y, w, jnp.zeros(2), 1.0, reefl.LocalConfig())
  assert loss2 > jnp.sum(reefl.exit_cross_entropies(logits2, y, w)) + 1e-4


@pytest.fixture(scope='module')
def small_run():
  """4 clients (tiers 0, 1, 0, 1) of 5-7 examples; three rounds of 2 clients."""
  params = init(jax.random.PRNGKey(0), CFG)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(24, 8, 8, 1)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 3, size=24), jnp.int32)
  counts = [5, 7, 6, 6]
  clients = [reefl.ClientData(jnp.asarray(np.arange(8) + 6 * i, jnp.int32) % 24,
                              jnp.int32(c), i % 2) for i, c in enumerate(counts)]
  traces = {}
  alg = reefl.reefl(CFG, regime='full', hp=reefl.Hparams(rounds=3, kd_rounds=2),
                    local=reefl.LocalConfig(batch_size=4), trace_counts=traces)
  state = alg.init(params)
  history = []
  for r, sampled in enumerate([[0, 1], [2, 3], [0, 2]], start=1):
    before = state.params
    state, diag = tiers.train_round(alg, state, clients, images, labels,
                                    np.array(sampled), jax.random.PRNGKey(r), r)
    history.append((before, state.params, diag))
  return alg, params, clients, images, labels, traces, history


def test_vmapped_clients_train_as_the_loop(small_run):
  """The batched mapping: tier chunks of 2 (one padded), unequal step counts."""
  alg, params, clients, images, labels, traces, _ = small_run
  out = {}
  for mapping in ('loop', 'vmap'):
    out[mapping] = tiers.train_round(alg, alg.init(params), clients, images, labels,
                                     np.array([0, 1, 2]), jax.random.PRNGKey(4), 2, mapping, 2)
  (a, da), (b, db) = out['loop'], out['vmap']
  np.testing.assert_allclose(da['loss'], db['loss'], rtol=1e-5)
  for t in da['teacher']:
    np.testing.assert_array_equal(da['teacher'][t], db['teacher'][t])
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  assert traces['batch'] == 1


def test_one_program_for_every_tier_and_no_recompilation(small_run):
  *_, traces, history = small_run
  assert traces['all'] == 1   # (a vmapped program, if a test ran one, counts as 'batch')
  assert all(diag['finite'] for *_, diag in history)


def test_blocks_no_sampled_client_holds_keep_their_values(small_run):
  *_, history = small_run
  before, after, diag = history[2]  # round 3 samples tier-0 clients only
  assert set(diag['teacher']) == {0}
  for x, y in zip(jax.tree.leaves(before['blocks']), jax.tree.leaves(after['blocks'])):
    np.testing.assert_array_equal(x[1:], y[1:])
  assert not np.array_equal(before['blocks']['q']['kernel'][0], after['blocks']['q']['kernel'][0])


def test_local_training_masks_the_last_batch_and_resets_the_teacher_ema(small_run):
  alg, params, clients, images, labels, _, _ = small_run
  state = alg.init(params)
  shared = alg.broadcast(state, 1)
  key = jax.random.PRNGKey(7)
  out1 = alg.client(shared, clients[1], images, labels, key, 3)
  out2 = alg.client(shared, clients[1], images, labels, key, 3)
  assert int(out1.metrics['steps']) == 2  # 7 examples, batches of 4: 4 + 3 (masked)
  assert float(jnp.sum(out1.metrics['teacher'])) == 2
  # Nothing carries over between calls (the EMA starts at 0 in each).
  np.testing.assert_array_equal(out1.metrics['teacher'], out2.metrics['teacher'])
  for k in out1.tree:
    np.testing.assert_array_equal(out1.tree[k], out2.tree[k])
  # A tier-0 client trains (and uploads) block 0 and Ree only; block 1 comes back as sent.
  shared0 = alg.broadcast(state, 0)
  out0 = alg.client(shared0, clients[0], images, labels, key, 3)
  table = reefl.held_table(CFG, 'full', params)
  np.testing.assert_array_equal(table['blocks/q/kernel'], [[True, False], [True, True]])
  assert table['ree/head/dense/kernel'].all()
  np.testing.assert_array_equal(out0.tree['blocks/q/kernel'][1], shared0[0]['blocks/q/kernel'][1])
  assert not np.array_equal(out0.tree['blocks/q/kernel'][0], shared0[0]['blocks/q/kernel'][0])


def test_regimes_choose_trainable_parameters():
  params = init(jax.random.PRNGKey(0), CFG._replace(lora_rank=2, lora_alpha=4.0))
  flat = reefl.flatten(params)
  frozen_train, _ = reefl.split(flat, 'frozen')
  lora_train, _ = reefl.split(flat, 'lora')
  assert frozen_train and all(k.startswith('ree/') for k in frozen_train)
  extra = set(lora_train) - set(frozen_train)
  assert extra and all(k.endswith(('lora_a', 'lora_b')) for k in extra)
  assert {k.split('/')[2] for k in extra} == {'q', 'v'}
  counts = reefl.tier_param_counts(CFG, 'full', init(jax.random.PRNGKey(0), CFG))
  assert counts[0]['held'] < counts[1]['held']


def test_lora_round_trains_only_ree_and_the_lora_factors(small_run):
  _, _, clients, images, labels, _, _ = small_run
  cfg = CFG._replace(lora_rank=2, lora_alpha=4.0)
  params = init(jax.random.PRNGKey(1), cfg)
  alg = reefl.reefl(cfg, regime='lora', hp=reefl.Hparams(rounds=3, kd_rounds=2),
                    local=reefl.LocalConfig(batch_size=4))
  state, _ = tiers.train_round(alg, alg.init(params), clients, images, labels,
                               np.array([0, 2]), jax.random.PRNGKey(0), 2)
  before, after = reefl.flatten(params), reefl.flatten(state.params)
  changed = {k for k in before if not np.array_equal(before[k], after[k])}
  assert any(k.startswith('ree/') for k in changed)
  assert 'blocks/0/q/lora_b' in changed and 'blocks/0/v/lora_b' in changed
  assert all(k.startswith('ree/') or k.endswith(('lora_a', 'lora_b')) for k in changed)
  assert not any(k.startswith('blocks/1/') for k in changed)  # tier 0 holds block 0 only
