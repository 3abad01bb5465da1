r"""Ree: the recurrent early-exit module shared by every exit of a ViT (docs/design.md s.8).

Lee, Sun, Mascolo, Dudziak, Choi, Lane. "Recurrent Early Exits for Federated
Learning with Heterogeneous Clients", ICML 2024 (public code: royson/reefl,
``src/models/accumulator_nets.py``, class ``Ree``).

At block ``l`` of the backbone Ree reads the class tokens seen so far,
``[h_0, ..., h_{l-1}, z_l]`` (``h`` the history, ``z_l`` the block's own class
token), prepends a learnable meta ("client") token, adds a learnable position
embedding and runs one pre-norm transformer layer over the ``l + 2`` tokens:

.. math::

  m = \mathrm{Layer}([z_{meta}, h_0, \ldots, h_{l-1}, z_l] + P_{:l+2}),
  \qquad \mathrm{logits}_l = \mathrm{head}(m_0 + z_l)

with ``head = LayerNorm + Linear`` shared by all exits. ``m_{-1}`` is the
modulated class token the backbone continues with (``mg.models.vit``).

Details pinned to the code (they differ from a textbook transformer layer):
  * attention width ``attn_dim`` (16) split over ``heads`` (8), and the logits
    scaled by ``attn_dim ** -0.5`` -- not by the per-head width;
  * q, k, v from one biased ``Linear(dim, 3 attn_dim)``, chunked in that order;
  * FFN width ``int(dim * mlp_ratio)`` (ratio 1.35), exact (erf) GELU;
  * PyTorch's default LayerNorm epsilon 1e-5 (the ViT backbone uses 1e-6);
  * ``recurrent_steps`` repeats of each of ``depth`` layers (both 1 in ReeFL).
Dropouts are 0 in ReeFL and omitted.

Parameters are a plain dict; ``init`` draws linear weights from N(0, 0.02^2)
(``init_std``; 0 means N(0, 1/d_in))
with zero biases (the ViT's ``_init_weights`` reaches Ree's layers too) and the
meta token and position embedding from N(0, 0.02^2) (the code's truncation at
+-2 is 100 standard deviations away, so it is a plain normal).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

INIT_STD = 0.02


class ReeConfig(NamedTuple):
  """Ree's shape: the code's ``reeFL.yaml`` defaults."""
  dim: int                   # the backbone's token width
  max_tokens: int            # meta token + one per backbone block (depth + 1)
  num_classes: int
  heads: int = 8
  attn_dim: int = 16
  mlp_ratio: float = 1.35
  depth: int = 1
  recurrent_steps: int = 1
  eps: float = 1e-5          # LayerNorm epsilon (PyTorch default)
  init_std: float = INIT_STD # linear weights; 0: N(0, 1/d_in)

  @property
  def hidden(self) -> int:
    return int(self.dim * self.mlp_ratio)


def layer_norm(x: jax.Array, p: dict, eps: float) -> jax.Array:
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps) * p['scale'] + p['bias']


def linear(x: jax.Array, p: dict) -> jax.Array:
  return x @ p['kernel'] + p['bias']


def _norm(dim: int) -> dict:
  return {'scale': jnp.ones((dim,), jnp.float32), 'bias': jnp.zeros((dim,), jnp.float32)}


def _linear(key: jax.Array, d_in: int, d_out: int, std: float) -> dict:
  std = std or 1.0 / math.sqrt(d_in)
  return {'kernel': std * jax.random.normal(key, (d_in, d_out), jnp.float32),
          'bias': jnp.zeros((d_out,), jnp.float32)}


def init(key: jax.Array, cfg: ReeConfig) -> dict:
  """Ree's parameters: meta token, position embedding, layers, shared head."""
  keys = jax.random.split(key, 3 + 4 * cfg.depth)
  layers = []
  for j in range(cfg.depth):
    k = keys[3 + 4 * j: 7 + 4 * j]
    layers.append({
        'ln1': _norm(cfg.dim),
        'qkv': _linear(k[0], cfg.dim, 3 * cfg.attn_dim, cfg.init_std),
        'out': _linear(k[1], cfg.attn_dim, cfg.dim, cfg.init_std),
        'ln2': _norm(cfg.dim),
        'fc1': _linear(k[2], cfg.dim, cfg.hidden, cfg.init_std),
        'fc2': _linear(k[3], cfg.hidden, cfg.dim, cfg.init_std),
    })
  return {
      'meta': INIT_STD * jax.random.normal(keys[0], (cfg.dim,), jnp.float32),
      'pos': INIT_STD * jax.random.normal(keys[1], (cfg.max_tokens, cfg.dim), jnp.float32),
      'layers': layers,
      'head': {'ln': _norm(cfg.dim), 'dense': _linear(keys[2], cfg.dim, cfg.num_classes, cfg.init_std)},
  }


def attention(p: dict, x: jax.Array, cfg: ReeConfig) -> jax.Array:
  """Multi-head self-attention over (B, L, dim), scaled by ``attn_dim ** -0.5``."""
  b, n, _ = x.shape
  q, k, v = jnp.split(linear(x, p['qkv']), 3, axis=-1)
  split = lambda t: t.reshape(b, n, cfg.heads, cfg.attn_dim // cfg.heads)
  q, k, v = split(q), split(k), split(v)
  dots = jnp.einsum('bihd,bjhd->bhij', q, k) * (cfg.attn_dim ** -0.5)
  attn = jax.nn.softmax(dots, axis=-1)
  out = jnp.einsum('bhij,bjhd->bihd', attn, v).reshape(b, n, cfg.attn_dim)
  return linear(out, p['out'])


def transformer(layers: list, x: jax.Array, cfg: ReeConfig) -> jax.Array:
  for p in layers:
    for _ in range(cfg.recurrent_steps):
      x = x + attention(p, layer_norm(x, p['ln1'], cfg.eps), cfg)
      h = jax.nn.gelu(linear(layer_norm(x, p['ln2'], cfg.eps), p['fc1']), approximate=False)
      x = x + linear(h, p['fc2'])
  return x


def apply(params: dict, tokens: jax.Array, cfg: ReeConfig) -> jax.Array:
  """Ree over class tokens (B, n, dim) -> ``m`` (B, n + 1, dim), meta token first."""
  b, n, _ = tokens.shape
  meta = jnp.broadcast_to(params['meta'], (b, 1, cfg.dim))
  x = jnp.concatenate([meta, tokens], axis=1) + params['pos'][:n + 1]
  return transformer(params['layers'], x, cfg)


def head(params: dict, m: jax.Array, z: jax.Array, cfg: ReeConfig) -> jax.Array:
  """The shared exit head on ``m_0 + z_l``: LayerNorm then Linear."""
  h = params['head']
  return linear(layer_norm(m[:, 0] + z, h['ln'], cfg.eps), h['dense'])


def macs(cfg: ReeConfig, n: int) -> int:
  """Multiply-accumulates of one Ree pass over ``n`` class tokens (per example).

  Counts the linear layers and the two attention products; LayerNorm, softmax
  and GELU are not counted (the usual convention).
  """
  length = n + 1
  d, a = cfg.dim, cfg.attn_dim
  per_layer = (length * d * 3 * a + 2 * length * length * a + length * a * d
               + 2 * length * d * cfg.hidden)
  return cfg.depth * cfg.recurrent_steps * per_layer


def head_macs(cfg: ReeConfig) -> int:
  return cfg.dim * cfg.num_classes


def param_count(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))
