"""A pure-function Vision Transformer with recurrent early exits (ReeFL; docs/design.md s.7).

Lee et al., "Recurrent Early Exits for Federated Learning with Heterogeneous
Clients", ICML 2024; the backbone of the public code (royson/reefl,
``src/models/reefl_vit.py``), a DeiT-style ViT:

  * patch embedding (a stride-``p`` convolution), a CLS token, learned position
    embeddings; pre-norm blocks ``x += attn(LN(x)); x += mlp(LN(x))`` with
    LayerNorm epsilon 1e-6, biased q/k/v as *separate* linear layers (so LoRA
    and masks address them by path), scale ``head_dim ** -0.5``, exact GELU,
    MLP ratio 4; no final norm (each exit head has its own LayerNorm);
  * exits after the blocks ``reversed(range(D-1, -1, -1)[::D // E])``
    (:func:`exit_blocks`: D=12, E=4 gives 2, 5, 8, 11);
  * one :mod:`mg.models.ree` module shared by all exits. After *every* block
    (exit or not) the CLS token is replaced by Ree's last output ("modulation")
    when ``modulation`` is on, and the history Ree reads holds the *modulated*
    tokens: the code appends a view ``x[:, 0]`` to its token list and then
    writes ``x[:, 0] = m[:, -1]`` in place, so the stored entry changes too.
    ``raw_history=True`` keeps the unmodulated tokens instead (not the code).
    Without modulation Ree runs only at the exits.

A budget tier ``t`` holds the blocks up to its exit ``exit_blocks[t]`` and the
exits up to ``t``; ``apply(..., tier=t)`` runs exactly that truncated model, so
parameters it does not hold receive exactly zero gradient.

LoRA (``lora_rank > 0``): the q and v layers of every block get ``A`` (d_in, r)
drawn like PyTorch's ``kaiming_uniform_(a=sqrt 5)`` (U(+-1/sqrt d_in)) and
``B`` (r, d_out) = 0, added as ``x A B * alpha / r`` (the code's
``LoRALinear``, dropout 0).

Parameters are plain dicts::

  {'patch': {'kernel' (p, p, C, d), 'bias'}, 'cls' (d,), 'pos' (N+1, d),
   'blocks': [{'ln1', 'q', 'k', 'v', 'proj', 'ln2', 'fc1', 'fc2'}, ...],
   'ree': mg.models.ree parameters}

Initialisation as the code: linear weights N(0, 0.02^2) (``init_std``; 0 means
N(0, 1/d_in), used for small models trained from scratch), zero biases, unit
LayerNorms, CLS and position N(0, 0.02^2), the patch convolution PyTorch's
default (U(+-1/sqrt fan_in) for weight and bias). Images are (B, H, W, C);
single-channel images are repeated to 3 channels when the model has 3 input
channels (the code's ``images.expand``), and images of another size are
resized bilinearly to ``image_size`` (the code's ``Resize((224, 224))``).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from mg.models import ree as ree_lib
from mg.models.ree import layer_norm, linear

INIT_STD = 0.02


class ViTConfig(NamedTuple):
  """The backbone, its exits and Ree (``vit_small``: 224, 16, 384, 12, 6)."""
  image_size: int
  patch_size: int
  in_chans: int
  dim: int
  depth: int
  heads: int
  num_exits: int
  num_classes: int
  mlp_ratio: float = 4.0
  eps: float = 1e-6
  modulation: bool = True
  raw_history: bool = False
  lora_rank: int = 0
  lora_alpha: float = 1.0
  ree_heads: int = 8
  ree_attn_dim: int = 16
  ree_mlp_ratio: float = 1.35
  ree_depth: int = 1
  ree_recurrent_steps: int = 1
  ree_max_tokens: int = 0    # 0: depth + 1 (the code: 13 for its 12-block models)
  # Std of the linear weights: 0.02 as the code (made for a pretrained DeiT);
  # 0 draws N(0, 1/d_in) (LeCun), which plain SGD needs to leave the initial
  # plateau when a small ViT trains from scratch.
  init_std: float = INIT_STD

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  @property
  def hidden(self) -> int:
    return int(self.dim * self.mlp_ratio)

  @property
  def exits(self) -> tuple[int, ...]:
    return exit_blocks(self.depth, self.num_exits)

  @property
  def ree(self) -> ree_lib.ReeConfig:
    return ree_lib.ReeConfig(
        dim=self.dim, max_tokens=self.ree_max_tokens or self.depth + 1,
        num_classes=self.num_classes, heads=self.ree_heads,
        attn_dim=self.ree_attn_dim, mlp_ratio=self.ree_mlp_ratio,
        depth=self.ree_depth, recurrent_steps=self.ree_recurrent_steps,
        init_std=self.init_std)


def exit_blocks(depth: int, num_exits: int) -> tuple[int, ...]:
  """0-based blocks followed by an exit, as the code: ``reversed(range(D-1, -1, -1)[::D//E])``."""
  if num_exits < 1 or depth % num_exits:
    raise ValueError(f'depth {depth} is not a multiple of the number of exits {num_exits}')
  return tuple(reversed(range(depth - 1, -1, -1)[::depth // num_exits]))


def _linear(key, d_in, d_out, std):
  std = std or 1.0 / math.sqrt(d_in)
  return {'kernel': std * jax.random.normal(key, (d_in, d_out), jnp.float32),
          'bias': jnp.zeros((d_out,), jnp.float32)}


def _norm(dim):
  return {'scale': jnp.ones((dim,), jnp.float32), 'bias': jnp.zeros((dim,), jnp.float32)}


def _lora(key, d_in, d_out, rank):
  bound = 1.0 / math.sqrt(d_in)
  return {'lora_a': jax.random.uniform(key, (d_in, rank), jnp.float32, -bound, bound),
          'lora_b': jnp.zeros((rank, d_out), jnp.float32)}


def _block(key, cfg: ViTConfig) -> dict:
  k = jax.random.split(key, 8)
  d = cfg.dim
  s = cfg.init_std
  block = {'ln1': _norm(d), 'q': _linear(k[0], d, d, s), 'k': _linear(k[1], d, d, s),
           'v': _linear(k[2], d, d, s), 'proj': _linear(k[3], d, d, s), 'ln2': _norm(d),
           'fc1': _linear(k[4], d, cfg.hidden, s), 'fc2': _linear(k[5], cfg.hidden, d, s)}
  if cfg.lora_rank:
    block['q'].update(_lora(k[6], d, d, cfg.lora_rank))
    block['v'].update(_lora(k[7], d, d, cfg.lora_rank))
  return block


def init(key: jax.Array, cfg: ViTConfig) -> dict:
  """All parameters of the full model (every block, Ree with its shared head)."""
  if cfg.image_size % cfg.patch_size:
    raise ValueError(f'image size {cfg.image_size} is not a multiple of patch {cfg.patch_size}')
  if cfg.dim % cfg.heads:
    raise ValueError(f'width {cfg.dim} is not a multiple of {cfg.heads} heads')
  keys = jax.random.split(key, cfg.depth + 5)
  p = cfg.patch_size
  fan_in = p * p * cfg.in_chans
  bound = 1.0 / math.sqrt(fan_in)
  return {
      'patch': {'kernel': jax.random.uniform(keys[0], (p, p, cfg.in_chans, cfg.dim),
                                             jnp.float32, -bound, bound),
                'bias': jax.random.uniform(keys[1], (cfg.dim,), jnp.float32, -bound, bound)},
      'cls': INIT_STD * jax.random.normal(keys[2], (cfg.dim,), jnp.float32),
      'pos': INIT_STD * jax.random.normal(keys[3], (cfg.num_patches + 1, cfg.dim), jnp.float32),
      'blocks': [_block(keys[5 + i], cfg) for i in range(cfg.depth)],
      'ree': ree_lib.init(keys[4], cfg.ree),
  }


def _dense(x, p, lora_scale):
  y = linear(x, p)
  if 'lora_a' in p:
    y = y + (x @ p['lora_a'] @ p['lora_b']) * lora_scale
  return y


def embed(params: dict, images: jax.Array, cfg: ViTConfig) -> jax.Array:
  """Images (B, H, W, C) -> tokens (B, N + 1, d): patches, CLS, positions."""
  if images.shape[-1] == 1 and cfg.in_chans == 3:
    images = jnp.repeat(images, 3, axis=-1)
  if images.shape[1:3] != (cfg.image_size, cfg.image_size):
    # The code's transforms.Resize((224, 224)): bilinear, done here on the fly
    # so the dataset stays at its own size in memory.
    images = jax.image.resize(
        images, (images.shape[0], cfg.image_size, cfg.image_size, images.shape[-1]), 'bilinear')
  b, h, w, c = images.shape
  p = cfg.patch_size
  width = params['patch']['kernel'].shape[-1]  # cfg.dim, or a width slice (ScaleFL)
  patches = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  patches = patches.reshape(b, (h // p) * (w // p), p * p * c)
  x = patches @ params['patch']['kernel'].reshape(p * p * c, width) + params['patch']['bias']
  cls = jnp.broadcast_to(params['cls'], (b, 1, width))
  return jnp.concatenate([cls, x], axis=1) + params['pos']


def block(p: dict, x: jax.Array, cfg: ViTConfig) -> jax.Array:
  """One pre-norm transformer block (B, T, d) -> (B, T, d)."""
  b, t, d = x.shape
  scale = cfg.lora_alpha / cfg.lora_rank if cfg.lora_rank else 0.0
  h = layer_norm(x, p['ln1'], cfg.eps)
  split = lambda y: y.reshape(b, t, cfg.heads, d // cfg.heads)
  q = split(_dense(h, p['q'], scale))
  k = split(linear(h, p['k']))
  v = split(_dense(h, p['v'], scale))
  dots = jnp.einsum('bihd,bjhd->bhij', q, k) * ((d // cfg.heads) ** -0.5)
  attn = jax.nn.softmax(dots, axis=-1)
  x = x + linear(jnp.einsum('bhij,bjhd->bihd', attn, v).reshape(b, t, d), p['proj'])
  h = jax.nn.gelu(linear(layer_norm(x, p['ln2'], cfg.eps), p['fc1']), approximate=False)
  return x + linear(h, p['fc2'])


def apply(params: dict, images: jax.Array, cfg: ViTConfig,
          tier: Optional[int] = None) -> list[jax.Array]:
  """Logits (B, classes) at every exit up to ``tier`` (None: all exits).

  Only ``params['blocks'][:exit_blocks[tier] + 1]`` are read, so ``params`` may
  hold just those blocks (a tier's own parameters).
  """
  exits = cfg.exits
  tier = len(exits) - 1 if tier is None else tier
  rcfg = cfg.ree
  x = embed(params, images, cfg)
  history, logits = [], []
  for l in range(exits[tier] + 1):
    x = block(params['blocks'][l], x, cfg)
    z = x[:, 0]
    is_exit = l in exits
    m = None
    if is_exit or cfg.modulation:
      m = ree_lib.apply(params['ree'], jnp.stack(history + [z], axis=1), rcfg)
    if is_exit:
      logits.append(ree_lib.head(params['ree'], m, z, rcfg))
    if cfg.modulation:
      x = x.at[:, 0].set(m[:, -1])
      history.append(z if cfg.raw_history else m[:, -1])
    else:
      history.append(z)
  return logits


def tier_params(params: dict, tier: int, cfg: ViTConfig) -> dict:
  """The parameters a tier holds: everything but the blocks after its exit."""
  return dict(params, blocks=params['blocks'][:cfg.exits[tier] + 1])


def macs_per_exit(cfg: ViTConfig) -> list[int]:
  """Multiply-accumulates per example to reach each exit (cumulative).

  Linear layers, the patch convolution and the attention products; norms,
  softmax and GELU are not counted. Ree runs after every block with
  modulation, only at exits without it.
  """
  t, d = cfg.num_patches + 1, cfg.dim
  p2c = cfg.patch_size ** 2 * cfg.in_chans
  total = cfg.num_patches * p2c * d
  per_block = 4 * t * d * d + 2 * t * t * d + 2 * t * d * cfg.hidden
  if cfg.lora_rank:
    per_block += 2 * 2 * t * d * cfg.lora_rank
  out = []
  for l in range(cfg.depth):
    total += per_block
    if l in cfg.exits or cfg.modulation:
      total += ree_lib.macs(cfg.ree, l + 1)
    if l in cfg.exits:
      total += ree_lib.head_macs(cfg.ree)
      out.append(total)
  return out
