"""ViT with recurrent early exits: exit indices, Ree against NumPy, truncation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from mg.models import exit_heads
from mg.models import ree as ree_lib
from mg.models import vit

# Eager op-by-op dispatch is slow; jitted runs compile fast.
apply = jax.jit(vit.apply, static_argnums=(2, 3))
init = jax.jit(vit.init, static_argnums=1)

CFG = vit.ViTConfig(image_size=8, patch_size=4, in_chans=1, dim=16, depth=4,
                    heads=2, num_exits=2, num_classes=3)


@pytest.mark.parametrize('depth, exits, expected', [
    (12, 4, (2, 5, 8, 11)),
    (12, 12, tuple(range(12))),
    (8, 4, (1, 3, 5, 7)),
])
def test_exit_blocks_follow_the_code(depth, exits, expected):
  assert vit.exit_blocks(depth, exits) == expected


def test_exit_blocks_reject_uneven_split():
  with pytest.raises(ValueError):
    vit.exit_blocks(12, 5)


# ----------------------------------------------------------- NumPy reference

def _ln(x, p, eps):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p['scale'] + p['bias']


def _lin(x, p):
  return x @ p['kernel'] + p['bias']


def _gelu(x):
  return 0.5 * x * (1 + special.erf(x / math.sqrt(2)))


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _np_ree(p, tokens, heads=8, attn_dim=16):
  """Ree as the code's ``Ree.forward``, one batch row at a time."""
  b, n, d = tokens.shape
  x = np.concatenate([np.broadcast_to(p['meta'], (b, 1, d)), tokens], 1) + p['pos'][:n + 1]
  layer = p['layers_0']
  out = []
  for row in x:
    h = _ln(row, layer['ln1'], 1e-5)
    qkv = _lin(h, layer['qkv'])
    q, k, v = qkv[:, :attn_dim], qkv[:, attn_dim:2 * attn_dim], qkv[:, 2 * attn_dim:]
    hd = attn_dim // heads
    o = np.zeros((n + 1, attn_dim))
    for i in range(heads):
      s = slice(i * hd, (i + 1) * hd)
      a = _softmax(q[:, s] @ k[:, s].T * attn_dim ** -0.5)  # the code's scale
      o[:, s] = a @ v[:, s]
    row = row + _lin(o, layer['out'])
    row = row + _lin(_gelu(_lin(_ln(row, layer['ln2'], 1e-5), layer['fc1'])), layer['fc2'])
    out.append(row)
  return np.stack(out)


def _np_block(p, x, heads):
  b, t, d = x.shape
  h = _ln(x, p['ln1'], 1e-6)
  q, k, v = _lin(h, p['q']), _lin(h, p['k']), _lin(h, p['v'])
  hd = d // heads
  o = np.zeros_like(x)
  for i in range(heads):
    s = slice(i * hd, (i + 1) * hd)
    a = _softmax(np.einsum('bid,bjd->bij', q[..., s], k[..., s]) * hd ** -0.5)
    o[..., s] = np.einsum('bij,bjd->bid', a, v[..., s])
  x = x + _lin(o, p['proj'])
  return x + _lin(_gelu(_lin(_ln(x, p['ln2'], 1e-6), p['fc1'])), p['fc2'])


def _np_forward(p, images, cfg, modulation=True):
  """The code's ``VisionTransformer.forward`` with its in-place CLS write."""
  b = images.shape[0]
  ps = cfg.patch_size
  g = cfg.image_size // ps
  patches = images.reshape(b, g, ps, g, ps, 1).transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, -1)
  x = patches @ p['patch']['kernel'].reshape(-1, cfg.dim) + p['patch']['bias']
  x = np.concatenate([np.broadcast_to(p['cls'], (b, 1, cfg.dim)), x], 1) + p['pos']
  cls_tokens, logits = [], []
  for l, bp in enumerate(_per_block(p['blocks'])):
    x = _np_block(bp, x, cfg.heads)
    cls_tokens.append(x[:, 0].copy())
    mod = None
    if l in cfg.exits:
      hist = np.stack(cls_tokens, 1)
      mod = _np_ree(p['ree'], hist)
      head = p['ree']['head']
      logits.append(_lin(_ln(mod[:, 0] + hist[:, -1], head['ln'], 1e-5), head['dense']))
    if modulation:
      if mod is None:
        mod = _np_ree(p['ree'], np.stack(cls_tokens, 1))
      x[:, 0] = mod[:, -1]
      cls_tokens[-1] = mod[:, -1]  # the appended view sees the in-place write
  return logits


def _per_block(stacked):
  """The stacked block parameters as one tree per block."""
  depth = jax.tree.leaves(stacked)[0].shape[0]
  return [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(depth)]


def _random_params(cfg, seed=0):
  params = init(jax.random.PRNGKey(seed), cfg)
  # Non-trivial norms, biases and Ree embeddings so every term matters.
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda x: jnp.asarray(np.asarray(x) + 0.3 * rng.standard_normal(x.shape), jnp.float32),
      params)


@pytest.mark.parametrize('modulation', [True, False])
def test_forward_matches_numpy_reference(modulation):
  cfg = CFG._replace(modulation=modulation)
  params = _random_params(cfg)
  images = np.asarray(jax.random.normal(jax.random.PRNGKey(5), (3, 8, 8, 1)))
  got = apply(params, jnp.asarray(images), cfg)
  want = _np_forward(jax.tree.map(np.asarray, params), images.astype(np.float64), cfg,
                     modulation)
  assert len(got) == len(want) == 2
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), w, rtol=2e-4, atol=2e-4)


def test_ree_matches_numpy_reference():
  rcfg = ree_lib.ReeConfig(dim=16, max_tokens=5, num_classes=3)
  params = _random_params(CFG)['ree']
  tokens = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (2, 3, 16)))
  got = ree_lib.apply(params, jnp.asarray(tokens), rcfg)
  want = _np_ree(jax.tree.map(np.asarray, params), tokens.astype(np.float64))
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=2e-4)


def test_modulation_changes_later_exits_only():
  params = _random_params(CFG)
  images = jax.random.normal(jax.random.PRNGKey(3), (2, 8, 8, 1))
  on = apply(params, images, CFG)
  off = apply(params, images, CFG._replace(modulation=False))
  raw = apply(params, images, CFG._replace(raw_history=True))
  # Block 0 (not an exit) is modulated before exit 0 at block 1, and exit 0
  # reads h_0: the modulated token, or the raw one with raw_history.
  assert not np.allclose(on[0], off[0])
  assert not np.allclose(on[0], raw[0])
  assert not np.allclose(on[1], raw[1])


@pytest.mark.parametrize('modulation', [True, False])
def test_one_program_runs_every_tier_as_its_truncated_model(modulation):
  cfg = CFG._replace(modulation=modulation)
  params = _random_params(cfg)
  images = jax.random.normal(jax.random.PRNGKey(4), (2, 8, 8, 1))
  run = jax.jit(lambda p, t: vit.apply_to_tier(p, images, cfg, t))
  grad = jax.jit(jax.grad(lambda p, t: sum(
      jnp.where(e <= t, jnp.sum(l ** 2), 0.0)
      for e, l in enumerate(vit.apply_to_tier(p, images, cfg, t)))))
  full = jax.jit(lambda p: apply(p, images, cfg))(params)  # a tier's exits are the full model's
  for tier in range(cfg.num_exits):
    got = run(params, jnp.int32(tier))
    assert len(got) == cfg.num_exits
    for e in range(tier + 1):
      np.testing.assert_allclose(np.asarray(got[e]), np.asarray(full[e]), rtol=1e-5, atol=1e-6)
    held = cfg.exits[tier] + 1
    grads = grad(params, jnp.int32(tier))['blocks']
    for leaf in jax.tree.leaves(grads):
      assert np.all(np.asarray(leaf)[held:] == 0.0)
    assert all(np.any(row != 0.0) for row in np.asarray(grads['fc1']['kernel'])[:held])


def test_truncated_tier_equals_full_model_and_has_zero_grads():
  params = _random_params(CFG)
  images = jax.random.normal(jax.random.PRNGKey(4), (2, 8, 8, 1))
  full = apply(params, images, CFG)
  tier0 = apply(vit.tier_params(params, 0, CFG), images, CFG, 0)
  assert len(tier0) == 1
  np.testing.assert_array_equal(np.asarray(tier0[0]), np.asarray(full[0]))

  grads = jax.jit(jax.grad(lambda p: jnp.sum(vit.apply(p, images, CFG, tier=0)[0] ** 2)))(params)
  held = CFG.exits[0] + 1
  for leaf in jax.tree.leaves(grads['blocks']):
    assert np.all(np.asarray(leaf)[held:] == 0.0)
  assert any(np.any(np.asarray(x)[:held] != 0) for x in jax.tree.leaves(grads['blocks']))


def test_lora_starts_as_the_base_model_and_macs_grow():
  cfg = CFG._replace(lora_rank=2, lora_alpha=4.0)
  params = init(jax.random.PRNGKey(0), cfg)
  assert params['blocks']['q']['lora_a'].shape == (CFG.depth, 16, 2)
  assert 'lora_a' not in params['blocks']['k']
  blocks = dict(params['blocks'])
  for name in ('q', 'v'):
    blocks[name] = {'kernel': blocks[name]['kernel'], 'bias': blocks[name]['bias']}
  base = dict(params, blocks=blocks)
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1))
  for a, b in zip(apply(params, images, cfg), apply(base, images, CFG)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  macs = vit.macs_per_exit(CFG)
  assert len(macs) == 2 and macs[0] < macs[1]
  # Without modulation Ree runs at the exits only: fewer MACs.
  assert vit.macs_per_exit(CFG._replace(modulation=False))[1] < macs[1]


@pytest.mark.parametrize('init_std, head_init_std', [(0.02, None), (0.0, None), (0.0, 0.02)])
@pytest.mark.parametrize('heads', [False, True])
def test_initial_parameters_follow_the_codes_distributions(init_std, head_init_std, heads):
  """Linear N(0, std^2) or N(0, 1/d_in); patch U(+-1/sqrt fan_in); CLS, positions, meta N(0, 0.02^2);
  LoRA A U(+-1/sqrt d_in), B 0; zero biases, unit norms (every leaf checked). Ree's (or the
  per-exit heads') linear weights at ``head_init_std`` when it is set."""
  cfg = vit.ViTConfig(image_size=32, patch_size=8, in_chans=3, dim=64, depth=4, heads=4,
                      num_exits=2, num_classes=10, lora_rank=8, init_std=init_std,
                      head_init_std=head_init_std)
  flat = vit.flatten((exit_heads.init if heads else init)(jax.random.PRNGKey(0), cfg))
  exit_module = 'heads/' if heads else 'ree/'
  fan_in = 8 * 8 * 3
  seen = set()
  for path, x in flat.items():
    x = np.asarray(x)
    leaf = path.rsplit('/', 1)[-1]
    if path.startswith('patch/'):
      bound = 1 / math.sqrt(fan_in)
      assert x.min() >= -bound and x.max() <= bound and x.std() > 0.9 * bound / math.sqrt(3)
    elif path in ('cls', 'pos', 'ree/meta', 'ree/pos'):
      assert abs(x.std() - 0.02) < 0.1 * 0.02 or x.size < 200, path
    elif leaf == 'scale':
      assert np.all(x == 1.0), path
    elif leaf == 'bias':
      assert np.all(x == 0.0), path
    elif leaf == 'lora_a':
      bound = 1 / math.sqrt(x.shape[0])
      assert x.min() >= -bound and x.max() <= bound and x.std() > 0.8 * bound / math.sqrt(3)
    elif leaf == 'lora_b':
      assert np.all(x == 0.0), path
    else:
      assert leaf == 'kernel', path
      std = cfg.exit_init_std if path.startswith(exit_module) else init_std
      want = std or 1 / math.sqrt(x.shape[0])
      assert abs(x.mean()) < 0.1 * want and abs(x.std() - want) < 0.1 * want, (path, x.std())
    seen.add(leaf)
  assert seen == {'kernel', 'bias', 'scale', 'lora_a', 'lora_b', 'cls', 'pos'} | (
      set() if heads else {'meta'})
