"""Server rules over clients holding different parts of the model, on the device.

Each rule against the float64 host version it replaced (``host_rules``) on
random inputs: at most 1e-6 relative error, everywhere, cancellations included.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from host_rules import aggregate, count_mean, feddyn_aggregate
from mg.federated import aggregation
from mg.federated import compensated as cf
from mg.models.vit import stack, unstack

RNG = np.random.default_rng(0)
C, D = 7, 4
SHAPES = {'blocks/q/kernel': (D, 16, 8), 'ree/w': (12, 5), 'head/b': (9,)}


def _rel(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-30)))


def _random_round(rng):
  """A random round: global values, uploads, tiers holding blocks 0..t (+ a head from tier 2)."""
  old = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
  uploads = {k: rng.normal(size=(C,) + s).astype(np.float32) for k, s in SHAPES.items()}
  # Near-cancellations: one entry's uploads sum almost to zero.
  uploads['ree/w'][:, 0, 0] = [1.0, -1.0, 1e-4, 3.0, -3.0, 2.5e-5, 0.0]
  held_paths = [{f'blocks/{i}/q/kernel' for i in range(t + 1)} | {'ree/w'}
                | ({'head/b'} if t >= 2 else set()) for t in range(4)]
  tiers = np.array([0, 1, 2, 3, 3, 1, 2])
  return old, uploads, held_paths, tiers


def _host_uploads(uploads, held_paths, tiers):
  """The same uploads as the host rules take them: per client, the per-block paths it holds."""
  out = []
  for c in range(C):
    flat = unstack({k: v[c] for k, v in uploads.items()})
    out.append({k: v for k, v in flat.items() if k in held_paths[tiers[c]]})
  return out


def test_error_free_transformations_are_exact():
  a = jnp.asarray(RNG.normal(size=1000), jnp.float32)
  b = jnp.asarray(RNG.normal(size=1000) * 1e-3, jnp.float32)
  a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
  s = cf.two_sum(a, b)
  np.testing.assert_array_equal(np.asarray(s.hi, np.float64) + np.asarray(s.lo, np.float64),
                                a64 + b64)
  p = cf.two_prod(a, b)
  np.testing.assert_array_equal(np.asarray(p.hi, np.float64) + np.asarray(p.lo, np.float64),
                                a64 * b64)


def test_compensated_sum_matches_an_exact_sum_under_cancellation():
  x = np.array([1e8, 1.0, -1e8, 1e-3, 3.0, -4.0], np.float32)
  w = np.array([1.0, 3.0, 1.0, 7.0, 2.0, 1.5], np.float32)
  want = math.fsum(float(a) * float(b) for a, b in zip(w, x))
  got = cf.dot(jnp.asarray(w), jnp.asarray(x)).value()
  assert float(got) == pytest.approx(want, rel=1e-7)
  assert float(jnp.dot(w, x)) != pytest.approx(want, rel=1e-3)  # plain float32 loses it
  q = cf.div(cf.of(1.0), cf.of(3.0))
  assert float(np.float64(q.hi) + np.float64(q.lo)) == pytest.approx(1 / 3, rel=1e-13)


def test_held_mean_hand_worked_three_clients():
  old = {'a': jnp.float32(0.0), 'b': jnp.float32(10.0), 'c': jnp.float32(5.0)}
  uploads = {'a': jnp.array([1.0, 5.0, 2.0]), 'b': jnp.array([2.0, np.nan, 8.0]),
             'c': jnp.zeros(3)}
  held = {'a': jnp.array([True, True, True]), 'b': jnp.array([True, False, True]),
          'c': jnp.array([False, False, False])}
  new = aggregation.held_mean(old, uploads, jnp.array([1.0, 3.0, 2.0]), held)
  assert float(new['a']) == pytest.approx((1 * 1 + 3 * 5 + 2 * 2) / 6)
  assert float(new['b']) == pytest.approx((1 * 2 + 2 * 8) / 3)  # the NaN is not held
  assert float(new['c']) == 5.0  # held by no client: unchanged
  assert bool(aggregation.all_finite(uploads, held))
  assert not bool(aggregation.all_finite(uploads, dict(held, b=jnp.array([True] * 3))))


def test_held_mean_matches_the_float64_host_rule():
  old, uploads, held_paths, tiers = _random_round(RNG)
  weights = RNG.integers(20, 100, size=C).astype(np.float32)
  table = aggregation.mask_table(held_paths, old)
  assert table['blocks/q/kernel'].shape == (4, D) and table['ree/w'].shape == (4,)
  held = aggregation.gather_masks(table, jnp.asarray(tiers))
  got = jax.jit(aggregation.held_mean)(old, uploads, weights, held)
  want = stack(aggregate(unstack(old), list(zip(_host_uploads(uploads, held_paths, tiers),
                                                 weights))))
  for k in old:
    assert _rel(got[k], want[k]) <= 1e-6, k
  # Sizes by tier: tier 0 holds one block row and ree/w.
  sizes = aggregation.held_sizes(table, old)
  assert sizes[0] == 16 * 8 + 12 * 5
  assert sizes[3] == 4 * 16 * 8 + 12 * 5 + 9


def test_feddyn_matches_the_float64_host_rule():
  old, uploads, held_paths, tiers = _random_round(RNG)
  h = {k: RNG.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
  held = aggregation.gather_masks(aggregation.mask_table(held_paths, old), jnp.asarray(tiers))
  got, got_h = jax.jit(aggregation.feddyn, static_argnums=(4, 5))(old, h, uploads, held, 90, 0.1)
  want, want_h = feddyn_aggregate(unstack(old), unstack(h),
                                  _host_uploads(uploads, held_paths, tiers), 90, 0.1)
  want, want_h = stack(want), stack(want_h)
  for k in old:
    assert _rel(got[k], want[k]) <= 1e-6, k
    assert _rel(got_h[k], want_h[k]) <= 1e-6, k


def test_count_mean_over_slices_matches_the_float64_host_rule():
  old = {'w': RNG.normal(size=(6, 5)).astype(np.float32)}
  shapes = [(2, 2), (3, 5), (6, 4), (6, 5), (3, 5)]
  small = [RNG.normal(size=s).astype(np.float32) for s in shapes]
  padded = {'w': np.stack([np.pad(x, [(0, 6 - x.shape[0]), (0, 5 - x.shape[1])]) for x in small])}
  held = {'w': np.stack([np.pad(np.ones(s, bool), [(0, 6 - s[0]), (0, 5 - s[1])])
                         for s in shapes])}
  got = aggregation.held_mean(old, padded, jnp.ones((len(shapes),)), held)['w']
  want = count_mean(old, [{'w': x} for x in small])['w']
  assert _rel(got, want) <= 1e-6
