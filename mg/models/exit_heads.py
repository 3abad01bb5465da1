r"""The baselines' early-exit ViT: one ``LayerNorm + Linear`` head per exit on the CLS token.

What the baselines of docs/design.md s.13 train in place of Ree.

The ReeFL paper's baselines (Lee et al., ICML 2024, Section 5 and Table 1)
replace Ree by a separate head per exit; the public code (royson/reefl,
``src/models/reefl_vit.py`` with ``accumulator: NormAndLinear, layerwise:
True``, ``src/models/accumulator_nets.py``) applies head ``e`` to the class
token after the exit block ``exits[e]``, with no modulation and no history:

.. math::

  \mathrm{logits}_e = W_e\, \mathrm{LN}_e(x_{exits[e]}[:, 0]) + b_e

The backbone is :mod:`mg.models.vit`'s (same blocks, same exits, same
initialisation); ``params['heads']`` replaces ``params['ree']``. The head's
LayerNorm has PyTorch's default epsilon 1e-5 (``nn.LayerNorm(dim)``).

**Width** (ScaleFL). Every function here reads widths from the parameters,
so a model cut to width ``w`` (:func:`width_shapes`, :func:`slice_to`) runs
through the same code: the code's ``width_scale`` gives the token width
``int(dim * w)``, the attention width rounded up to a multiple of the heads
(``ceil(width / heads) * heads``, the code's ``Attention``), the MLP width
``int(width * mlp_ratio)``, and every tensor is the leading-index slice of the
full one (``prune`` with ``torch.arange(size)`` on every axis).
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from mg.models import vit
from mg.models.ree import layer_norm, linear
from mg.models.tree_paths import flatten, unflatten

HEAD_EPS = 1e-5

# The code's ScaleFL width lists (README, "Additional Commands for ScaleFL").
SCALEFL_WIDTHS = {
    4: (0.4, 0.55, 0.75, 1.0),
    12: (0.25, 0.3, 0.35, 0.4, 0.48, 0.55, 0.61, 0.69, 0.75, 0.84, 0.92, 1.0),
}


def _head(key, dim: int, num_classes: int, std: float) -> dict:
  std = std or 1.0 / math.sqrt(dim)
  return {'ln': {'scale': jnp.ones((dim,), jnp.float32), 'bias': jnp.zeros((dim,), jnp.float32)},
          'dense': {'kernel': std * jax.random.normal(key, (dim, num_classes), jnp.float32),
                    'bias': jnp.zeros((num_classes,), jnp.float32)}}


def init(key: jax.Array, cfg: vit.ViTConfig) -> dict:
  """The backbone of :func:`mg.models.vit.init` with one head per exit instead of Ree."""
  k_backbone, k_heads = jax.random.split(key)
  params = dict(vit.init(k_backbone, cfg))
  del params['ree']
  keys = jax.random.split(k_heads, cfg.num_exits)
  params['heads'] = [_head(keys[e], cfg.dim, cfg.num_classes, cfg.init_std)
                     for e in range(cfg.num_exits)]
  return params


def _dense(x, p, lora_scale):
  y = linear(x, p)
  if 'lora_a' in p:
    y = y + (x @ p['lora_a'] @ p['lora_b']) * lora_scale
  return y


# Patches, CLS and positions as in ReeFL's ViT (images resized on the fly to the
# model's size); the width is read from the patch kernel, so a ScaleFL slice works.
embed = vit.embed


def block(p: dict, x: jax.Array, cfg: vit.ViTConfig) -> jax.Array:
  """:func:`mg.models.vit.block` with the attention width read from ``q``."""
  b, t, _ = x.shape
  a = p['q']['kernel'].shape[1]
  hd = a // cfg.heads
  scale = cfg.lora_alpha / cfg.lora_rank if cfg.lora_rank else 0.0
  h = layer_norm(x, p['ln1'], cfg.eps)
  split = lambda y: y.reshape(b, t, cfg.heads, hd)
  q = split(_dense(h, p['q'], scale))
  k = split(linear(h, p['k']))
  v = split(_dense(h, p['v'], scale))
  attn = jax.nn.softmax(jnp.einsum('bihd,bjhd->bhij', q, k) * hd ** -0.5, axis=-1)
  x = x + linear(jnp.einsum('bhij,bjhd->bihd', attn, v).reshape(b, t, a), p['proj'])
  h = jax.nn.gelu(linear(layer_norm(x, p['ln2'], cfg.eps), p['fc1']), approximate=False)
  return x + linear(h, p['fc2'])


def head(p: dict, z: jax.Array) -> jax.Array:
  return linear(layer_norm(z, p['ln'], HEAD_EPS), p['dense'])


def apply(params: dict, images: jax.Array, cfg: vit.ViTConfig, tier: Optional[int] = None,
          last_only: bool = False) -> list[jax.Array]:
  """Logits (B, classes) at every exit up to ``tier`` (or only at ``tier``'s exit).

  Reads ``params['blocks'][:exits[tier] + 1]`` and ``params['heads'][e]`` for
  the exits it returns, so a tier's own parameters suffice; with
  ``last_only`` the heads of the earlier exits may be absent (InclusiveFL).
  """
  exits = cfg.exits
  tier = len(exits) - 1 if tier is None else tier
  heads = params['heads']
  x = embed(params, images, cfg)
  logits = []
  for l in range(exits[tier] + 1):
    x = block(params['blocks'][l], x, cfg)
    if l in exits[:tier + 1] and (not last_only or l == exits[tier]):
      e = exits.index(l)
      logits.append(head(heads[e] if not isinstance(heads, dict) else heads[str(e)], x[:, 0]))
  return logits


def tier_params(params: dict, tier: int, cfg: vit.ViTConfig, last_only: bool = False) -> dict:
  """What a tier holds: the blocks up to its exit and its heads (only its own with ``last_only``)."""
  heads = params['heads']
  kept = {str(tier): heads[tier]} if last_only else heads[:tier + 1]
  return dict(params, blocks=params['blocks'][:cfg.exits[tier] + 1], heads=kept)


# ---------------------------------------------------------------------- width


def widths(cfg: vit.ViTConfig, scale: float) -> tuple[int, int, int]:
  """(token width, attention width, MLP width) of a model cut to ``scale`` (the code's rules)."""
  w = int(cfg.dim * scale)
  a = math.ceil(w / cfg.heads) * cfg.heads
  return w, a, int(w * cfg.mlp_ratio)


def width_shapes(tree, cfg: vit.ViTConfig, scale: float) -> dict:
  """``{path: shape}`` of ``tree`` (a tier's parameters at full width) cut to ``scale``."""
  w, a, hid = widths(cfg, scale)
  out = {}
  for path, x in flatten(tree).items():
    parts = path.split('/')
    leaf, shape = parts[-1], tuple(x.shape)
    layer = parts[-2] if len(parts) > 1 else ''
    if path.startswith('blocks/') and layer in ('q', 'k', 'v'):
      new = {'kernel': (w, a), 'bias': (a,), 'lora_a': (w, shape[-1]),
             'lora_b': (shape[0], a)}[leaf]
    elif path.startswith('blocks/') and layer == 'proj':
      new = (a, w) if leaf == 'kernel' else (w,)
    elif path.startswith('blocks/') and layer == 'fc1':
      new = (w, hid) if leaf == 'kernel' else (hid,)
    elif path.startswith('blocks/') and layer == 'fc2':
      new = (hid, w) if leaf == 'kernel' else (w,)
    elif path.startswith('heads/') and layer == 'dense':
      new = (w, shape[1]) if leaf == 'kernel' else shape
    else:  # patch, cls, pos, LayerNorms: the token width is the last axis
      new = shape[:-1] + (w,)
    if any(n > s for n, s in zip(new, shape)):
      raise ValueError(f'{path}: width {scale} gives {new}, larger than {shape}')
    out[path] = new
  return out


def slice_to(flat: dict, shapes: dict) -> dict:
  """The leading-index slice ``x[:s0, :s1, ...]`` of each parameter (the code's ``prune``)."""
  return {k: flat[k][tuple(slice(0, s) for s in shapes[k])] for k in shapes}


def sliced_tier(params: dict, tier: int, cfg: vit.ViTConfig, scale: float) -> dict:
  """Tier ``tier``'s parameters cut to width ``scale``, as a tree."""
  full = tier_params(params, tier, cfg)
  return unflatten(slice_to(flatten(full), width_shapes(full, cfg, scale)), full)


def macs_per_exit(cfg: vit.ViTConfig, scales=None) -> list[int]:
  """Multiply-accumulates per example to reach each exit (as :func:`mg.models.vit.macs_per_exit`).

  ``scales[e]``: exit ``e`` runs its own model cut to that width (ScaleFL);
  None: one full-width model.
  """
  t = cfg.num_patches + 1
  p2c = cfg.patch_size ** 2 * cfg.in_chans
  out = []
  for e, exit_block in enumerate(cfg.exits):
    w, a, hid = widths(cfg, 1.0 if scales is None else scales[e])
    per_block = 4 * t * w * a + 2 * t * t * a + 2 * t * w * hid
    if cfg.lora_rank:
      per_block += 2 * t * (w + a) * cfg.lora_rank
    out.append(cfg.num_patches * p2c * w + (exit_block + 1) * per_block + w * cfg.num_classes)
  return out
