r"""The baselines' early-exit ViT: one ``LayerNorm + Linear`` head per exit on the CLS token.

What the baselines of docs/design.md s.13 train in place of Ree.

The ReeFL paper's baselines (Lee et al., ICML 2024, Section 5 and Table 1)
replace Ree by a separate head per exit; the public code (royson/reefl,
``src/models/reefl_vit.py`` with ``accumulator: NormAndLinear, layerwise:
True``, ``src/models/accumulator_nets.py``) applies head ``e`` to the class
token after the exit block ``exits[e]``, with no modulation and no history:

.. math::

  \mathrm{logits}_e = W_e\, \mathrm{LN}_e(x_{exits[e]}[:, 0]) + b_e

The backbone is :mod:`mg.models.vit`'s (the same ``Base``: embedding, scanned
blocks, exits, initialisation); ``params['heads']`` (``{'0': ..., '1': ...}``,
one :class:`mg.models.ree.Head` per exit) replaces ``params['ree']``. The
head's LayerNorm has PyTorch's default epsilon 1e-5 (``nn.LayerNorm(dim)``).

**Width** (ScaleFL). :func:`apply` reads the widths from the parameters and
builds the module at them, so a model cut to width ``w`` (:func:`width_shapes`,
:func:`slice_to`) runs through the same code: the code's ``width_scale`` gives the token width
``int(dim * w)``, the attention width rounded up to a multiple of the heads
(``ceil(width / heads) * heads``, the code's ``Attention``), the MLP width
``int(width * mlp_ratio)``, and every tensor is the leading-index slice of the
full one (``prune`` with ``torch.arange(size)`` on every axis).
"""

from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax

from mg.models import ree as ree_lib
from mg.models import vit
from mg.models.vit import flatten, unflatten

# The code's ScaleFL width lists (README, "Additional Commands for ScaleFL").
SCALEFL_WIDTHS = {
    4: (0.4, 0.55, 0.75, 1.0),
    12: (0.25, 0.3, 0.35, 0.4, 0.48, 0.55, 0.61, 0.69, 0.75, 0.84, 0.92, 1.0),
}


class _Heads(nn.Module):
  """One head per exit, named by the exit's index."""
  num_classes: int
  init_std: float

  @nn.compact
  def __call__(self, tokens: dict[int, jax.Array]) -> list[jax.Array]:
    return [ree_lib.Head(self.num_classes, self.init_std, name=str(e))(z)
            for e, z in tokens.items()]


class EarlyExitViT(vit.Base):
  """The ViT with a ``LayerNorm + Linear`` head per exit: logits at each exit up to ``tier``'s.

  ``last_only``: only the tier's own exit (InclusiveFL); the other heads may be absent.
  """
  last_only: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, held=None) -> list[jax.Array]:
    exits = self.exits
    _, tokens = self.scan(vit.class_token_step, self.embed(images), held, vit.class_token)
    wanted = range(len(exits) - 1, len(exits)) if self.last_only else range(len(exits))
    heads = _Heads(self.cfg.num_classes, self.cfg.exit_init_std, name='heads')
    return heads({e: tokens[exits[e]] for e in wanted})


def init(key: jax.Array, cfg: vit.ViTConfig) -> dict:
  """The backbone of :func:`mg.models.vit.init` with one head per exit instead of Ree."""
  vit.check(cfg)
  return EarlyExitViT(cfg).init(key, vit.dummy_images(cfg))['params']


def _widths(params: dict) -> vit.Widths:
  """The widths a (possibly sliced) parameter tree was cut to."""
  blocks = params['blocks']
  return vit.Widths(params['patch']['kernel'].shape[-1], blocks['q']['kernel'].shape[-1],
                    blocks['fc1']['kernel'].shape[-1])


def apply(params: dict, images: jax.Array, cfg: vit.ViTConfig, tier: Optional[int] = None,
          last_only: bool = False) -> list[jax.Array]:
  """Logits (B, classes) at every exit up to ``tier`` (or only at ``tier``'s exit).

  Reads the blocks up to ``exits[tier]`` and ``params['heads'][str(e)]`` for
  the exits it returns, so a tier's own parameters suffice; with
  ``last_only`` the heads of the earlier exits may be absent (InclusiveFL).
  """
  params = vit.tier_params(params, tier, cfg)
  model = EarlyExitViT(cfg, tier, _widths(params), last_only)
  return model.apply({'params': params}, images)


def apply_to_tier(params: dict, images: jax.Array, cfg: vit.ViTConfig, tier) -> list[jax.Array]:
  """Logits at every exit, running only the blocks up to ``tier``'s exit (``tier`` may be traced).

  As :func:`mg.models.vit.apply_to_tier`: one program for every tier; the
  exits after ``tier``'s read the last computed class token and are masked
  by the caller; the blocks after the exit get exactly zero gradient.
  """
  model = EarlyExitViT(cfg, None, _widths(params))
  return model.apply({'params': params}, images, vit.held_blocks(cfg, tier))


def tier_params(params: dict, tier: int, cfg: vit.ViTConfig, last_only: bool = False) -> dict:
  """What a tier holds: the blocks up to its exit and its heads (only its own with ``last_only``)."""
  heads = params['heads']
  kept = [str(tier)] if last_only else [str(e) for e in range(tier + 1)]
  return dict(vit.tier_params(params, tier, cfg), heads={e: heads[e] for e in kept})


# ---------------------------------------------------------------------- width


def widths(cfg: vit.ViTConfig, scale: float) -> vit.Widths:
  """(token width, attention width, MLP width) of a model cut to ``scale`` (the code's rules)."""
  w = int(cfg.dim * scale)
  a = math.ceil(w / cfg.heads) * cfg.heads
  return vit.Widths(w, a, int(w * cfg.mlp_ratio))


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
  return unflatten(slice_to(flatten(full), width_shapes(full, cfg, scale)))


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
