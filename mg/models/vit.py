"""A Vision Transformer with recurrent early exits as Flax modules (ReeFL; docs/design.md s.7).

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

**Blocks are one stacked parameter set applied with** ``nn.scan``: every leaf
under ``blocks`` has a leading axis of length ``depth``, and the model runs
the first ``k`` rows for a tier whose exit is block ``k - 1``. One compiled
block body serves every depth, so compile time does not grow with the number
of blocks. With modulation, Ree runs inside the scan body over a buffer of
``depth`` history slots of which the first ``l + 1`` are real at block ``l``
(:mod:`mg.models.ree` masks the rest); Ree's parameters, shared by all
blocks, enter the scan as one broadcast parameter tree (``nn.scan`` would
otherwise stack them per block). Without modulation the scan only collects
the class tokens, and Ree reads them at each exit after it.

A budget tier ``t`` holds the blocks up to its exit ``exit_blocks[t]`` and the
exits up to ``t``; ``apply(..., tier=t)`` runs exactly that truncated model, so
parameters it does not hold receive exactly zero gradient.

LoRA (``lora_rank > 0``): the q and v layers of every block get ``A`` (d_in, r)
drawn like PyTorch's ``kaiming_uniform_(a=sqrt 5)`` (U(+-1/sqrt d_in)) and
``B`` (r, d_out) = 0, added as ``x A B * alpha / r`` (the code's
``LoRALinear``, dropout 0).

Parameters are plain trees passed to the pure functions :func:`init` and
:func:`apply`::

  {'patch': {'kernel' (p, p, C, d), 'bias'}, 'cls' (d,), 'pos' (N+1, d),
   'blocks': {'ln1', 'q', 'k', 'v', 'proj', 'ln2', 'fc1', 'fc2'} (leading axis D),
   'ree': mg.models.ree parameters}

:func:`flatten` gives them by path with one entry per block
(``blocks/3/q/kernel``), the layout the federated server aggregates and the
backbone files have always used; :func:`unflatten` stacks them back.

Initialisation as the code: linear weights N(0, 0.02^2) (``init_std``; 0 means
N(0, 1/d_in), used for small models trained from scratch; Ree and the exit
heads at ``head_init_std`` when set, the code's 0.02 being torch's
``trunc_normal_(std=0.02)``, whose cut at +-2 is 100 stds out), zero biases, unit
LayerNorms, CLS and position N(0, 0.02^2), the patch convolution PyTorch's
default (U(+-1/sqrt fan_in) for weight and bias). Images are (B, H, W, C);
single-channel images are repeated to 3 channels when the model has 3 input
channels (the code's ``images.expand``), and images of another size are
resized bilinearly to ``image_size`` (the code's ``Resize((224, 224))``).
"""

from __future__ import annotations

import functools
import math
import re
from typing import NamedTuple, Optional

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp

from mg.models import ree as ree_lib
from mg.models.ree import dense, gelu, layer_norm

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
  # Std of the backbone's linear weights: 0.02 as the code (made for a pretrained
  # DeiT); 0 draws N(0, 1/d_in) (LeCun), which plain SGD needs to leave the
  # initial plateau when a small ViT trains from scratch.
  init_std: float = INIT_STD
  # Std of Ree's and the exit heads' linear weights; None: ``init_std``. The
  # code draws them at 0.02 whatever the backbone (a fresh Ree near the identity).
  head_init_std: Optional[float] = None

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
  def exit_init_std(self) -> float:
    """Std of Ree's and the exit heads' linear weights (``head_init_std``, else ``init_std``)."""
    return self.init_std if self.head_init_std is None else self.head_init_std

  @property
  def ree(self) -> ree_lib.ReeConfig:
    return ree_lib.ReeConfig(
        dim=self.dim, max_tokens=self.ree_max_tokens or self.depth + 1,
        num_classes=self.num_classes, heads=self.ree_heads,
        attn_dim=self.ree_attn_dim, mlp_ratio=self.ree_mlp_ratio,
        depth=self.ree_depth, recurrent_steps=self.ree_recurrent_steps,
        init_std=self.exit_init_std)


class Widths(NamedTuple):
  """A block's widths: tokens, attention, MLP (a ScaleFL slice narrows all three)."""
  token: int
  attn: int
  mlp: int


def exit_blocks(depth: int, num_exits: int) -> tuple[int, ...]:
  """0-based blocks followed by an exit, as the code: ``reversed(range(D-1, -1, -1)[::D//E])``."""
  if num_exits < 1 or depth % num_exits:
    raise ValueError(f'depth {depth} is not a multiple of the number of exits {num_exits}')
  return tuple(reversed(range(depth - 1, -1, -1)[::depth // num_exits]))


def full_widths(cfg: ViTConfig) -> Widths:
  return Widths(cfg.dim, cfg.dim, cfg.hidden)


def check(cfg: ViTConfig) -> None:
  """Raises ValueError when the shapes do not fit together."""
  if cfg.image_size % cfg.patch_size:
    raise ValueError(f'image size {cfg.image_size} is not a multiple of patch {cfg.patch_size}')
  if cfg.dim % cfg.heads:
    raise ValueError(f'width {cfg.dim} is not a multiple of {cfg.heads} heads')
  exit_blocks(cfg.depth, cfg.num_exits)


# ------------------------------------------------------------------- modules


def _torch_uniform(fan_in: int):
  """PyTorch's default ``Conv2d`` weight and bias: U(+-1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
      key, shape, dtype, -bound, bound)


def _patchify(x: jax.Array, kernel: jax.Array, strides, padding, **unused) -> jax.Array:
  """``lax.conv_general_dilated`` of a stride-``p`` ``p x p`` kernel over NHWC images.

  Non-overlapping patches, so the convolution is one matmul of the patches
  (row-major ``(i, j, c)``, the layout of ``kernel.reshape(p * p * C, d)``) by
  the kernel. ``nn.Conv`` takes it as its ``conv_general_dilated``: on XLA:CPU
  a local step of the ``configs/reefl/mnist.py`` ViT ran markedly slower with
  the backend's convolution for its one input channel (docs/speed.md).
  """
  del unused
  p = kernel.shape[0]
  if tuple(strides) != (p, p) or padding != 'VALID':
    raise ValueError(f'patch embedding: stride {strides}, padding {padding} for a {p}x{p} kernel')
  b, h, w, c = x.shape
  patches = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return patches.reshape(b, h // p, w // p, p * p * c) @ kernel.reshape(p * p * c, -1)


class LoRADense(nn.Module):
  """``x W + b + (x A B) alpha / r``: the code's ``LoRALinear`` (dropout 0).

  ``W`` and ``b`` as :func:`mg.models.ree.dense`; ``A`` U(+-1/sqrt d_in), ``B`` zero.
  """
  features: int
  rank: int
  alpha: float
  init_std: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d_in = x.shape[-1]
    kernel = self.param('kernel', ree_lib.kernel_init(self.init_std), (d_in, self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    lora_a = self.param('lora_a', _torch_uniform(d_in), (d_in, self.rank))
    lora_b = self.param('lora_b', nn.initializers.zeros, (self.rank, self.features))
    return x @ kernel + bias + (x @ lora_a @ lora_b) * (self.alpha / self.rank)


class Block(nn.Module):
  """One pre-norm transformer block (B, T, w) -> (B, T, w) at the given widths."""
  widths: Widths
  heads: int
  eps: float
  init_std: float
  lora_rank: int = 0
  lora_alpha: float = 1.0

  def _qv(self, name: str):
    if self.lora_rank:
      return LoRADense(self.widths.attn, self.lora_rank, self.lora_alpha, self.init_std,
                       name=name)
    return dense(self.widths.attn, self.init_std, name)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w = self.widths
    h = layer_norm(self.eps, 'ln1')(x)
    q, k, v = self._qv('q')(h), dense(w.attn, self.init_std, 'k')(h), self._qv('v')(h)
    out = ree_lib.attention(q, k, v, self.heads, (w.attn // self.heads) ** -0.5)
    x = x + dense(w.token, self.init_std, 'proj')(out)
    h = gelu(dense(w.mlp, self.init_std, 'fc1')(layer_norm(self.eps, 'ln2')(x)))
    return x + dense(w.token, self.init_std, 'fc2')(h)


class Base(nn.Module):
  """What every early-exit ViT here shares: the embedding and the scanned blocks.

  ``tier``: the model runs the blocks up to that tier's exit (None: all);
  ``widths``: the block widths (a ScaleFL slice), the full model's when None.
  Subclasses call :meth:`embed` and :meth:`scan` from their ``nn.compact``
  ``__call__``, so the embedding and the blocks sit at the top of their tree.
  """
  cfg: ViTConfig
  tier: Optional[int] = None
  widths: Optional[Widths] = None

  @property
  def exits(self) -> tuple[int, ...]:
    """The blocks followed by the exits this model runs."""
    exits = self.cfg.exits
    return exits if self.tier is None else exits[:self.tier + 1]

  @property
  def width(self) -> Widths:
    return self.widths or full_widths(self.cfg)

  def embed(self, images: jax.Array) -> jax.Array:
    """Images (B, H, W, C) -> tokens (B, N + 1, w): patches, CLS, positions."""
    cfg, w = self.cfg, self.width.token
    if images.shape[-1] == 1 and cfg.in_chans == 3:
      images = jnp.repeat(images, 3, axis=-1)
    if images.shape[1:3] != (cfg.image_size, cfg.image_size):
      # The code's transforms.Resize((224, 224)): bilinear, done here on the fly
      # so the dataset stays at its own size in memory.
      images = jax.image.resize(
          images, (images.shape[0], cfg.image_size, cfg.image_size, images.shape[-1]),
          'bilinear')
    p = cfg.patch_size
    init = _torch_uniform(p * p * cfg.in_chans)
    x = nn.Conv(w, (p, p), strides=(p, p), padding='VALID', kernel_init=init, bias_init=init,
                conv_general_dilated=_patchify, name='patch')(images)
    x = x.reshape(x.shape[0], -1, w)
    cls = self.param('cls', nn.initializers.normal(INIT_STD), (w,))
    pos = self.param('pos', nn.initializers.normal(INIT_STD), (cfg.num_patches + 1, w))
    return jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, w)), x], axis=1) + pos

  def scan(self, step, carry, held=None, skip=None, **broadcast):
    """``nn.scan`` of ``step(block, carry, l, **broadcast) -> (carry, y)`` over the blocks up to the last exit.

    ``held`` (may be traced): only the blocks ``l < held`` run; the others
    pass the carry through and emit ``skip(carry)``, so one program serves
    every tier. The body is rematerialised (``nothing_saveable``): the
    backward pass recomputes a block from its input instead of stacking some
    70 intermediates per block, which on XLA:CPU compiled faster and ran
    faster (docs/speed.md, "ReeFL rounds").
    """
    cfg = self.cfg
    length = self.exits[-1] + 1
    block = Block(self.width, cfg.heads, cfg.eps, cfg.init_std, cfg.lora_rank, cfg.lora_alpha,
                  name='blocks')
    body = functools.partial(step, **broadcast)
    if held is not None:
      body = _skipping(body, held, skip)
    body = nn.checkpoint(body, policy=jax.checkpoint_policies.nothing_saveable,
                         prevent_cse=False)
    scanned = nn.scan(body, variable_axes={'params': 0}, split_rngs={'params': True},
                      length=length)
    return scanned(block, carry, jnp.arange(length))


def _skipping(step, held, skip):
  """``step`` at the blocks ``l < held``; elsewhere the carry unchanged and ``skip(carry)``."""

  def body(block, carry, l):
    if block.is_initializing():  # both branches must see the same parameters
      return step(block, carry, l)
    return nn.cond(l < held, step, lambda _, c, l: (c, skip(c)), block, carry, l)

  return body


def class_token(x: jax.Array) -> jax.Array:
  """Tokens (B, T, w) -> the class token (B, w)."""
  return x[:, 0]


def class_token_step(block, x, l):
  """A block, emitting its class token."""
  del l
  x = block(x)
  return x, class_token(x)


def _modulated_step(block, carry, l, ree, rcfg, raw_history):
  """A block, then Ree over the history and the modulation of the class token.

  The history buffer holds one class token per block, real up to slot ``l``;
  emits the exit logits Ree's head gives at block ``l``.
  """
  x, history = carry
  x = block(x)
  z = x[:, 0]
  history = history.at[:, l].set(z)
  modulated, logits = ree_lib.Ree(rcfg, parent=None).apply({'params': ree}, history, z, l + 1)
  x = x.at[:, 0].set(modulated)
  history = history.at[:, l].set(z if raw_history else modulated)
  return (x, history), logits


class ViT(Base):
  """ReeFL's ViT: logits (B, classes) at each exit up to ``tier``'s.

  Its ``blocks`` must have exactly the rows it runs (:func:`tier_params`).
  """

  @nn.compact
  def __call__(self, images: jax.Array, held=None) -> list[jax.Array]:
    cfg, exits = self.cfg, self.exits
    rcfg = cfg.ree
    ree = self.param('ree', lambda key: ree_lib.init(key, rcfg))
    x = self.embed(images)
    if cfg.modulation:
      # One slot per block of the full model, whatever the tier: a tier then
      # computes bit for bit what the full model computes up to its exit.
      history = jnp.zeros((x.shape[0], cfg.depth, cfg.dim), x.dtype)
      no_logits = lambda carry: jnp.zeros((x.shape[0], cfg.num_classes), x.dtype)
      _, logits = self.scan(_modulated_step, (x, history), held, no_logits, ree=ree, rcfg=rcfg,
                            raw_history=cfg.raw_history)
      return [logits[l] for l in exits]
    _, tokens = self.scan(class_token_step, x, held, class_token)
    tokens = jnp.swapaxes(tokens, 0, 1)  # (B, blocks, d)
    reader = ree_lib.Ree(rcfg, parent=None)
    return [reader.apply({'params': ree}, tokens[:, :l + 1], tokens[:, l])[1] for l in exits]


class _Embedding(Base):

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    return self.embed(images)


# ---------------------------------------------------------- pure functions


def dummy_images(cfg: ViTConfig) -> jax.Array:
  return jnp.zeros((1, cfg.image_size, cfg.image_size, cfg.in_chans), jnp.float32)


def init(key: jax.Array, cfg: ViTConfig) -> dict:
  """All parameters of the full model (every block, Ree with its shared head)."""
  check(cfg)
  return ViT(cfg).init(key, dummy_images(cfg))['params']


def apply(params: dict, images: jax.Array, cfg: ViTConfig,
          tier: Optional[int] = None) -> list[jax.Array]:
  """Logits (B, classes) at every exit up to ``tier`` (None: all exits).

  Only the blocks up to ``exit_blocks[tier]`` are read, so ``params`` may hold
  every block or just those (a tier's own parameters).
  """
  return ViT(cfg, tier).apply({'params': tier_params(params, tier, cfg)}, images)


def held_blocks(cfg: ViTConfig, tier) -> jax.Array:
  """The number of blocks tier ``tier`` (may be traced) holds: its exit block + 1."""
  return jnp.asarray(cfg.exits, jnp.int32)[tier] + 1


def apply_to_tier(params: dict, images: jax.Array, cfg: ViTConfig, tier) -> list[jax.Array]:
  """Logits at every exit of the full model, running only the blocks up to ``tier``'s exit.

  ``tier`` may be traced, so one compiled program serves every tier. The
  logits of the exits after ``tier``'s are not the model's (zeros with
  modulation, Ree over the last computed tokens without): callers mask them.
  Those of the exits up to ``tier``'s are :func:`apply`'s, and the blocks
  after the exit get exactly zero gradient.
  """
  return ViT(cfg).apply({'params': params}, images, held_blocks(cfg, tier))


def embed(params: dict, images: jax.Array, cfg: ViTConfig) -> jax.Array:
  """Images (B, H, W, C) -> tokens (B, N + 1, w): patches, CLS, positions."""
  w = params['patch']['kernel'].shape[-1]  # cfg.dim, or a width slice (ScaleFL)
  model = _Embedding(cfg, widths=Widths(w, w, w))
  return model.apply({'params': {k: params[k] for k in ('patch', 'cls', 'pos')}}, images)


def _rows(x, n: int):
  """The first ``n`` rows of a stacked leaf (an array or a ``jax.ShapeDtypeStruct``)."""
  if x.shape[0] == n:
    return x
  if isinstance(x, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct((n,) + tuple(x.shape[1:]), x.dtype)
  return x[:n]


def tier_params(params: dict, tier: Optional[int], cfg: ViTConfig) -> dict:
  """The parameters a tier holds: everything but the blocks after its exit."""
  if tier is None:
    return params
  held = cfg.exits[tier] + 1
  return dict(params, blocks=jax.tree.map(lambda x: _rows(x, held), params['blocks']))


# ---------------------------------------------------------- paths by block

_PER_BLOCK = re.compile(r'^blocks/(\d+)/(.+)$')


def _row(x, i: int):
  if isinstance(x, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(tuple(x.shape[1:]), x.dtype)
  return x[i]


def _stack(rows: list):
  if isinstance(rows[0], jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct((len(rows),) + tuple(rows[0].shape), rows[0].dtype)
  return jnp.stack(rows)


def unstack(flat: dict) -> dict:
  """``blocks/q/kernel`` (D, ...) -> ``blocks/0/q/kernel``, ..., one entry per block.

  Entries already per block, and every other entry, pass through.
  """
  out = {}
  for k, v in flat.items():
    if k.startswith('blocks/') and not _PER_BLOCK.match(k):
      rest = k[len('blocks/'):]
      for i in range(v.shape[0]):
        out[f'blocks/{i}/{rest}'] = _row(v, i)
    else:
      out[k] = v
  return out


def stack(flat: dict) -> dict:
  """The inverse of :func:`unstack`: per-block entries stacked along a leading axis.

  Blocks must be numbered 0..n-1 for every layer (big_vision's
  ``pyloop_to_scan`` does the same for its checkpoints).
  """
  out, rows = {}, {}
  for k, v in flat.items():
    match = _PER_BLOCK.match(k)
    if match:
      rows.setdefault(match[2], {})[int(match[1])] = v
    else:
      out[k] = v
  for rest, by_block in rows.items():
    if sorted(by_block) != list(range(len(by_block))):
      raise ValueError(f'blocks/*/{rest}: blocks {sorted(by_block)} are not 0..n-1')
    out[f'blocks/{rest}'] = _stack([by_block[i] for i in range(len(by_block))])
  return out


def flatten(tree: dict) -> dict:
  """``{'blocks/3/q/kernel': leaf, 'patch/kernel': leaf, ...}``: parameters by path, per block."""
  return unstack(traverse_util.flatten_dict(tree, sep='/'))


def unflatten(flat: dict) -> dict:
  """The parameter tree of a flat dict (per-block or stacked block entries)."""
  return traverse_util.unflatten_dict(stack(flat), sep='/')


# ------------------------------------------------------------------ compute


def macs_per_exit(cfg: ViTConfig) -> list[int]:
  """Multiply-accumulates per example to reach each exit (cumulative).

  Linear layers, the patch convolution and the attention products; norms,
  softmax and GELU are not counted. Ree runs after every block with
  modulation, only at exits without it (the code's count: Ree over the
  ``l + 1`` real tokens, not the padded buffer the scan carries).
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
