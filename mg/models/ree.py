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

``Ree`` is a ``flax.linen`` module; :func:`init`, :func:`apply` and
:func:`head` are its pure functions over a plain parameter tree::

  {'meta' (dim,), 'pos' (max_tokens, dim),
   'layers_0': {'ln1', 'qkv', 'out', 'ln2', 'fc1', 'fc2'}, ...,
   'head': {'ln', 'dense'}}

Ree can also read a fixed-length buffer of which only the first ``length``
tokens are real (``length`` may be traced): attention then ignores the other
keys, so the real tokens' outputs are those of the shorter sequence. That is
how the ViT runs Ree inside its scan over blocks, where the history grows.

Initialisation as the code: linear weights N(0, 0.02^2) (``init_std``; 0 means
N(0, 1/d_in)) with zero biases (the ViT's ``_init_weights`` reaches Ree's
layers too), unit LayerNorms, and the meta token and position embedding from
N(0, 0.02^2) (the code's truncation at +-2 is 100 standard deviations away, so
it is a plain normal).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

INIT_STD = 0.02
HEAD_EPS = 1e-5  # PyTorch's nn.LayerNorm default: Ree's layers and every exit head


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
  eps: float = HEAD_EPS      # LayerNorm epsilon (PyTorch default)
  init_std: float = INIT_STD # linear weights; 0: N(0, 1/d_in)

  @property
  def hidden(self) -> int:
    return int(self.dim * self.mlp_ratio)


def kernel_init(std: float):
  """Linear weights: N(0, std^2), or N(0, 1/d_in) (untruncated LeCun) when ``std`` is 0."""
  if std:
    return nn.initializers.normal(std)
  return nn.initializers.variance_scaling(1.0, 'fan_in', 'normal')


def dense(features: int, std: float, name: str) -> nn.Dense:
  """A biased linear layer with the code's initialisation (zero bias)."""
  return nn.Dense(features, kernel_init=kernel_init(std), name=name)


def layer_norm(eps: float, name: str) -> nn.LayerNorm:
  """PyTorch's ``nn.LayerNorm`` (biased variance, ``eps`` inside the root)."""
  return nn.LayerNorm(epsilon=eps, name=name)


def gelu(x: jax.Array) -> jax.Array:
  """PyTorch's default GELU: the exact (erf) form."""
  return jax.nn.gelu(x, approximate=False)


def attention(q, k, v, heads: int, scale: float, length=None) -> jax.Array:
  """Multi-head softmax attention: queries (B, R, width) over keys/values (B, T, width).

  Keys from ``length`` on are ignored. Returns (B, R, width).
  """
  width = q.shape[-1]
  split = lambda y: y.reshape(y.shape[:2] + (heads, width // heads))
  dots = jnp.einsum('bihd,bjhd->bhij', split(q), split(k)) * scale
  if length is not None:
    dots = jnp.where(jnp.arange(k.shape[1]) < length, dots, jnp.finfo(dots.dtype).min)
  weights = jax.nn.softmax(dots, axis=-1)
  return jnp.einsum('bhij,bjhd->bihd', weights, split(v)).reshape(q.shape)


class Head(nn.Module):
  """An exit head: ``LayerNorm`` (eps 1e-5) then ``Linear`` (Ree's shared one, or a baseline's per exit)."""
  num_classes: int
  init_std: float = INIT_STD
  eps: float = HEAD_EPS

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    return dense(self.num_classes, self.init_std, 'dense')(layer_norm(self.eps, 'ln')(z))


class ReeLayer(nn.Module):
  """One pre-norm transformer layer at Ree's widths (the module docstring).

  ``rows`` (may be traced): compute the outputs of those tokens only (every
  token is still a key), so a last layer costs two token rows, not ``T``.
  """
  cfg: ReeConfig

  @nn.compact
  def __call__(self, x: jax.Array, length=None, rows=None) -> jax.Array:
    cfg = self.cfg
    h = layer_norm(cfg.eps, 'ln1')(x)
    q, k, v = jnp.split(dense(3 * cfg.attn_dim, cfg.init_std, 'qkv')(h), 3, axis=-1)
    if rows is not None:
      q, x = jnp.take(q, rows, axis=1), jnp.take(x, rows, axis=1)
    out = attention(q, k, v, cfg.heads, cfg.attn_dim ** -0.5, length)
    x = x + dense(cfg.dim, cfg.init_std, 'out')(out)
    h = gelu(dense(cfg.hidden, cfg.init_std, 'fc1')(layer_norm(cfg.eps, 'ln2')(x)))
    return x + dense(cfg.dim, cfg.init_std, 'fc2')(h)


class Ree(nn.Module):
  """Ree over class tokens; ``__call__`` returns the modulated token and the exit logits."""
  cfg: ReeConfig

  def setup(self):
    cfg = self.cfg
    self.meta = self.param('meta', nn.initializers.normal(INIT_STD), (cfg.dim,))
    self.pos = self.param('pos', nn.initializers.normal(INIT_STD), (cfg.max_tokens, cfg.dim))
    self.layers = [ReeLayer(cfg) for _ in range(cfg.depth)]
    self.head = Head(cfg.num_classes, cfg.init_std, cfg.eps)

  def transform(self, tokens: jax.Array, length=None, rows=None) -> jax.Array:
    """Tokens (B, n, dim) -> ``m`` (B, n + 1, dim), meta token first.

    ``length``: with it, only ``tokens[:, :length]`` are real (the rest padding);
    ``rows``: return only those rows of ``m`` (B, len(rows), dim), computed as such.
    """
    b, n, _ = tokens.shape
    meta = jnp.broadcast_to(self.meta, (b, 1, self.cfg.dim))
    x = jnp.concatenate([meta, tokens], axis=1) + self.pos[:n + 1]
    valid = None if length is None else length + 1
    passes = [layer for layer in self.layers for _ in range(self.cfg.recurrent_steps)]
    for i, layer in enumerate(passes):
      x = layer(x, valid, rows if i == len(passes) - 1 else None)
    return x

  def __call__(self, tokens: jax.Array, z: jax.Array, length=None):
    """``(m_last, head(m_0 + z))`` for class tokens (B, n, dim) and the exit's own token ``z``.

    ``m_last``: ``m`` at the last real token (the modulated class token);
    only ``m_0`` and it are computed in the last layer.
    """
    last = tokens.shape[1] if length is None else length
    m = self.transform(tokens, length, jnp.stack([jnp.zeros_like(last), last]))
    return m[:, 1], self.head(m[:, 0] + z)


def init(key: jax.Array, cfg: ReeConfig) -> dict:
  """Ree's parameters: meta token, position embedding, layers, shared head."""
  tokens = jnp.zeros((1, 1, cfg.dim), jnp.float32)
  return Ree(cfg, parent=None).init(key, tokens, tokens[:, 0])['params']


def apply(params: dict, tokens: jax.Array, cfg: ReeConfig, length=None) -> jax.Array:
  """Ree over class tokens (B, n, dim) -> ``m`` (B, n + 1, dim), meta token first."""
  return Ree(cfg, parent=None).apply({'params': params}, tokens, length, method=Ree.transform)


def head(params: dict, m: jax.Array, z: jax.Array, cfg: ReeConfig) -> jax.Array:
  """The shared exit head on ``m_0 + z_l``: LayerNorm then Linear."""
  model = Head(cfg.num_classes, cfg.init_std, cfg.eps, parent=None)
  return model.apply({'params': params['head']}, m[:, 0] + z)


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
