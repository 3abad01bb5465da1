"""The MetaGater networks (docs/design.md s.6) as ``flax.linen`` modules.

Models, by name:

* ``mlp`` (MNIST): ``hidden`` dense d_in -> 100 (ReLU), ``out`` 100 -> C.
  Default gate: ``hidden`` (summary = the flattened image).
* ``cnn4`` (CIFAR-10): ``conv1``/``conv2``/``conv3`` with 32/64/128 3x3 filters,
  each ReLU then 2x2 max-pool, ``dense`` flatten -> C (2048 inputs for 32x32;
  1152 for 28x28 MNIST; 128 for 8x8 digits). Default gate: ``conv3``.
* ``cnn7`` (appendix; the paper gives no widths, these are the project's
  choice): ``conv1`` 32, ``conv2`` 32, max-pool, ``conv3`` 64, ``conv4`` 64,
  max-pool, ``conv5`` 128, ``conv6`` 128, global average pool, ``dense``
  128 -> C. Six convs, two max-pools, one average pool. Default gates:
  ``conv5`` and ``conv6``.

A gate multiplies its layer's output *after the ReLU and before the pooling*
(docs/design.md s.1: ``o_gated = m * o``); a zero channel stays zero through ReLU
and pooling either way. Any hidden layer (every layer but the classifier) may
carry a gate.

What is flax: ``Network`` is a ``flax.linen`` module with two submodules,
``theta`` (``Backbone``: one ``nn.Conv`` (3x3, ``SAME``, NHWC/HWIO) or
``nn.Dense`` per layer, named after the layer) and ``phi`` (``Gates``: one
``mg.models.gating.Gate`` per gated layer), so flax's own parameter tree is
``{'theta': {layer: {'kernel', 'bias'}}, 'phi': {layer: {'hidden': {...},
'out': {...}}}}``, with no conversion; ``phi == {}`` without gates (the one
key ``Model.init`` adds, since flax leaves out a module without parameters).
Initialisers are flax's (``gating.HE_NORMAL`` before a ReLU,
``gating.LECUN_NORMAL`` for the classifier, zero biases). ``theta`` is drawn
from the key independently of the gating choice (flax derives each
parameter's key from its path), so a gated model and its plain backbone built
with the same key share the same ``theta``.

What remains the project's own, because it was measured faster on XLA:CPU:
``patch_conv``, the convolution of an input with at most
``PATCH_CONV_MAX_CHANNELS`` channels as one matmul over patches (handed to
``nn.Conv`` as its ``conv_general_dilated``), and ``max_pool``, the floor
2x2 max-pool as crop + reshape + max. ``Model`` keeps the pure-function API
every other module uses: ``init(key)`` and ``apply(params, x, ...)`` over
plain parameter pytrees, plus the static layer facts (``LayerSpec``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mg.models import gating

NAMES = ('mlp', 'cnn4', 'cnn7')
DEFAULT_GATED_LAYERS = {
    'mlp': ('hidden',),
    'cnn4': ('conv3',),
    'cnn7': ('conv5', 'conv6'),
}
MLP_HIDDEN = 100
KERNEL_SIZE = 3
POOLS = (None, 'max', 'mean')

# Up to this many input channels a convolution runs as one matrix product over
# (kh * kw * C_in)-wide patches: a whole CNN-4 training step on XLA:CPU ran
# ~1.1x faster (CIFAR-10, batch 64: 1,469 -> 1,647 images/s), since a
# few-channel input is the slow case of the backend's convolution routines and
# the patches are small. Wider inputs stay plain convolutions (their patches
# cost more than they save). With XLA's own kernels (YNNPACK off,
# mg.federated.backend) it still pays: CIFAR-10's first convolution (batch 64,
# 3 -> 32 channels) runs forward in 0.84 ms as patches, 3.15 ms as a convolution.
PATCH_CONV_MAX_CHANNELS = 4

# nn.Conv's dimension numbers for a 4-D input: NHWC input, HWIO kernel.
_NHWC_HWIO = jax.lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))

Params = dict[str, Any]


def patch_conv(lhs: jax.Array, rhs: jax.Array, window_strides, padding,
               lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
               feature_group_count: int = 1, precision=None) -> jax.Array:
  """``lax.conv_general_dilated`` as one matmul over shifted-slice patches.

  Only what ``nn.Conv`` asks of it here: NHWC input, HWIO kernel of odd size,
  stride 1, ``SAME`` padding, no dilation, one group. Patch channel
  ``(i * kw + j) * C_in + c`` is input channel ``c`` at offset ``(i, j)``, the
  row-major order of ``rhs.reshape(kh * kw * C_in, C_out)``.
  """
  kh, kw, c_in, c_out = rhs.shape
  ones = (1,) * len(window_strides)
  if (tuple(window_strides) != ones or padding != 'SAME'
      or tuple(lhs_dilation or ones) != ones
      or tuple(rhs_dilation or ones) != ones or feature_group_count != 1
      or dimension_numbers != _NHWC_HWIO or kh % 2 == 0 or kw % 2 == 0):
    raise ValueError('patch_conv supports only stride-1 SAME NHWC/HWIO '
                     'convolutions with an odd kernel, no dilation or groups.')
  b, h, w, _ = lhs.shape
  padded = jnp.pad(lhs, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  patches = jnp.concatenate(
      [padded[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)], axis=-1)
  y = jnp.matmul(patches.reshape(b * h * w, kh * kw * c_in),
                 rhs.reshape(kh * kw * c_in, c_out), precision=precision)
  return y.reshape(b, h, w, c_out)


def flatten(x: jax.Array) -> jax.Array:
  """(B, H, W, C) -> (B, H*W*C) in NHWC order: the channel is the fastest axis.

  Row ``r`` of the next dense kernel therefore reads channel ``r % C``
  (used by ``mg.models.subnet_mask``).
  """
  return x.reshape(x.shape[0], -1)


def max_pool(x: jax.Array, window: int = 2) -> jax.Array:
  """Non-overlapping ``window x window`` max-pool with floor (``VALID``) sizes.

  Written as crop + reshape + max: same result as ``nn.max_pool`` (a
  ``lax.reduce_window``) with ``VALID`` padding, and its gradient is a plain
  elementwise select rather than a ``select_and_scatter`` (faster on CPU,
  batches cleanly under vmap).
  """
  b, h, w, c = x.shape
  ho, wo = h // window, w // window
  x = x[:, :ho * window, :wo * window, :]
  x = x.reshape(b, ho, window, wo, window, c)
  return x.max(axis=(2, 4))


def pool(x: jax.Array, kind: str | None) -> jax.Array:
  """Applies the pooling named by ``kind`` (one of ``POOLS``)."""
  if kind is None:
    return x
  if kind == 'max':
    return max_pool(x)
  if kind == 'mean':
    return x.mean(axis=(1, 2))
  raise ValueError(f'Unknown pooling {kind!r}; expected one of {POOLS}.')


def pooled_shape(shape: tuple[int, int, int], kind: str | None
                 ) -> tuple[int, ...]:
  """Static output shape of ``pool`` for one example of shape (H, W, C)."""
  h, w, c = shape
  if kind is None:
    return (h, w, c)
  if kind == 'max':
    return (h // 2, w // 2, c)
  if kind == 'mean':
    return (c,)
  raise ValueError(f'Unknown pooling {kind!r}; expected one of {POOLS}.')


class LayerSpec(NamedTuple):
  """Static description of one backbone layer.

  Attributes:
    name: key of the layer in ``theta`` (and ``phi`` when gated).
    kind: ``'conv'`` or ``'dense'`` (a dense layer flattens a 4-D input).
    in_shape: one example's input, (H, W, C_in) for a conv, (d_in,) for dense.
    features: output channels / units.
    relu: whether a ReLU follows.
    pool: ``None``, ``'max'`` (2x2 floor) or ``'mean'`` (global average).
  """
  name: str
  kind: str
  in_shape: tuple[int, ...]
  features: int
  relu: bool = True
  pool: str | None = None

  @property
  def in_channels(self) -> int:
    """Channels of the input: C_in for a conv, d_in for a dense layer."""
    return self.in_shape[-1]

  @property
  def out_shape(self) -> tuple[int, ...]:
    """One example's output shape before pooling."""
    if self.kind == 'conv':
      return self.in_shape[:2] + (self.features,)
    return (self.features,)


def _chain(input_shape, blueprint) -> tuple[LayerSpec, ...]:
  """Propagates static shapes through ``(name, kind, features, relu, pool)``."""
  specs = []
  shape = tuple(input_shape)
  for name, kind, features, relu, pool in blueprint:
    if kind == 'dense' and len(shape) > 1:
      shape = (math.prod(shape),)
    spec = LayerSpec(name, kind, shape, features, relu, pool)
    specs.append(spec)
    shape = spec.out_shape
    if pool is not None:
      shape = pooled_shape(shape, pool)
      if 0 in shape:
        raise ValueError(
            f'Input shape {tuple(input_shape)} is too small: the 2x2 max-pool '
            f'after layer {name!r} leaves an empty feature map. Use a larger '
            'input (cnn4 needs at least 8x8, cnn7 at least 4x4).')
  return tuple(specs)


def _blueprint(name: str, num_classes: int):
  if name == 'mlp':
    return (('hidden', 'dense', MLP_HIDDEN, True, None),
            ('out', 'dense', num_classes, False, None))
  if name == 'cnn4':
    return (('conv1', 'conv', 32, True, 'max'),
            ('conv2', 'conv', 64, True, 'max'),
            ('conv3', 'conv', 128, True, 'max'),
            ('dense', 'dense', num_classes, False, None))
  if name == 'cnn7':
    return (('conv1', 'conv', 32, True, None),
            ('conv2', 'conv', 32, True, 'max'),
            ('conv3', 'conv', 64, True, None),
            ('conv4', 'conv', 64, True, 'max'),
            ('conv5', 'conv', 128, True, None),
            ('conv6', 'conv', 128, True, 'mean'),
            ('dense', 'dense', num_classes, False, None))
  raise ValueError(f'Unknown model {name!r}; expected one of {NAMES}.')


def _backbone_layer(spec: LayerSpec) -> nn.Module:
  """The ``nn.Conv`` / ``nn.Dense`` of one layer, named after it."""
  kernel_init = gating.HE_NORMAL if spec.relu else gating.LECUN_NORMAL
  if spec.kind == 'dense':
    return nn.Dense(spec.features, kernel_init=kernel_init, name=spec.name)
  # A few-channel input runs as patches (PATCH_CONV_MAX_CHANNELS); None is
  # nn.Conv's own lax.conv_general_dilated, the hot spot of every local solve.
  conv = patch_conv if spec.in_channels <= PATCH_CONV_MAX_CHANNELS else None
  return nn.Conv(spec.features, (KERNEL_SIZE, KERNEL_SIZE), padding='SAME',
                 kernel_init=kernel_init, conv_general_dilated=conv,
                 name=spec.name)


# Backbone and Gates are called once per layer, by layer name: each call's
# compact body creates (or, in apply, binds) only that layer's submodule, and
# explicit names give the trees {layer: {...}} whatever the layer is called.


class Backbone(nn.Module):
  """``theta``: one ``nn.Conv`` / ``nn.Dense`` per layer, named after it.

  Attributes:
    specs: the layers, in order.
  """
  specs: tuple[LayerSpec, ...]

  @nn.compact
  def __call__(self, name: str, h: jax.Array) -> jax.Array:
    """Pre-activations of layer ``name`` on its input ``h``."""
    spec, = (spec for spec in self.specs if spec.name == name)
    return _backbone_layer(spec)(h)


class Gates(nn.Module):
  """``phi``: one ``gating.Gate`` per gated layer, named after it.

  Attributes:
    channels: ``(layer, C_out)`` of each gated layer.
    hidden: hidden width of every gate MLP.
  """
  channels: tuple[tuple[str, int], ...]
  hidden: int = 16

  @nn.compact
  def __call__(self, name: str, a: jax.Array, **kwargs) -> jax.Array:
    """The mask of layer ``name``'s gate on the layer input ``a``."""
    return gating.Gate(dict(self.channels)[name], self.hidden, name=name)(a, **kwargs)


class Network(nn.Module):
  """A MetaGater network with channel gating (MetaGater eq. 1).

  ``Network(...).init(key, x)['params']`` is ``{'theta', 'phi'}`` (``phi``
  absent without gates); ``Model`` wraps it in pure ``init`` / ``apply``.

  Attributes:
    specs: the backbone, in order.
    gated_layers: names of the layers that carry a gate.
    gate_hidden: hidden width of every gate MLP.
  """
  specs: tuple[LayerSpec, ...]
  gated_layers: tuple[str, ...] = ()
  gate_hidden: int = 16

  def setup(self):
    self.theta = Backbone(self.specs)
    self.phi = Gates(tuple((spec.name, spec.features) for spec in self.specs
                           if spec.name in self.gated_layers), self.gate_hidden)

  def __call__(self, x: jax.Array, *, key: jax.Array | None = None,
               deterministic: bool = True, tau=1.0,
               gates: dict[str, jax.Array] | None = None
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(logits, applied gates)``; arguments as ``Model.apply``'s."""
    forced = gates or {}
    applied = {}
    h = x
    for index, spec in enumerate(self.specs):
      if spec.kind == 'dense' and h.ndim > 2:
        h = flatten(h)
      out = self.theta(spec.name, h)
      if spec.relu:
        out = nn.relu(out)
      m = None
      if spec.name in forced:
        m = jnp.broadcast_to(
            jnp.asarray(forced[spec.name], jnp.float32),
            (h.shape[0], spec.features))
      elif spec.name in self.gated_layers:
        # Layer i's Gumbel noise: fold_in(key, i), an explicit key rather than
        # a flax rng stream, so callers keep passing one key per step.
        layer_key = None if key is None else jax.random.fold_in(key, index)
        m = self.phi(spec.name, h, key=layer_key,
                     deterministic=deterministic, tau=tau)
      if m is not None:
        out = out * (m[:, None, None, :] if out.ndim == 4 else m)
        applied[spec.name] = m
      h = pool(out, spec.pool)
    return h, applied


@dataclasses.dataclass(frozen=True)
class Model:
  """A network as pure functions plus the static facts other modules need.

  Hashable (frozen), so it may be a static argument of ``jax.jit``.

  Attributes:
    name: one of ``NAMES``.
    input_shape: (H, W, C) of one example.
    num_classes: width of the logits.
    layers: the backbone, in order (``LayerSpec``).
    gated_layers: names of the layers that carry a gate, in layer order.
    gate_hidden: hidden width of every gate MLP.
  """
  name: str
  input_shape: tuple[int, int, int]
  num_classes: int
  layers: tuple[LayerSpec, ...]
  gated_layers: tuple[str, ...]
  gate_hidden: int = 16

  @property
  def module(self) -> Network:
    """The ``flax.linen`` module that ``init`` and ``apply`` run."""
    return Network(self.layers, self.gated_layers, self.gate_hidden)

  @property
  def layer_names(self) -> tuple[str, ...]:
    return tuple(spec.name for spec in self.layers)

  @property
  def gateable_layers(self) -> tuple[str, ...]:
    """Layers that may carry a gate: every layer but the classifier."""
    return self.layer_names[:-1]

  def layer(self, name: str) -> LayerSpec:
    """The ``LayerSpec`` called ``name``."""
    return self.layers[self._index(name)]

  def next_layer(self, name: str) -> LayerSpec:
    """The layer that reads the output of layer ``name``."""
    index = self._index(name)
    if index + 1 == len(self.layers):
      raise ValueError(f'Layer {name!r} is the classifier of {self.name}; it '
                       'has no next layer.')
    return self.layers[index + 1]

  def _index(self, name: str) -> int:
    names = self.layer_names
    if name not in names:
      raise ValueError(f'Unknown layer {name!r} of model {self.name}; layers '
                       f'are {names}.')
    return names.index(name)

  def init(self, key: jax.Array) -> Params:
    """Fresh ``{'theta': ..., 'phi': ...}`` (flax's ``lazy_init``).

    Backbone kernels: He normal before a ReLU, LeCun normal for the
    classifier; zero biases. Gates: ``gating.Gate`` (positive logit bias, so
    gates start on). Each parameter's key is derived from ``key`` and its
    path, so gated and ungated models built from one key share ``theta``.

    ``lazy_init`` computes only the parameters (no forward pass) and, outside
    ``jit``, one small program per parameter shape: shapes shared across
    models (a gated model and its backbone) compile once per process, where a
    jitted ``init`` would compile each model's draws anew (~0.5 s per kernel
    on a 2-core CPU; cnn7 gated and plain, 8x8 inputs: 5.9 + 4.9 s jitted,
    3.0 + 0.04 s here). Under ``jit`` or ``vmap`` it traces like ``init``.
    """
    x = jax.ShapeDtypeStruct((1,) + tuple(self.input_shape), jnp.float32)
    params = self.module.lazy_init(key, x)['params']
    return {'theta': params['theta'], 'phi': params.get('phi', {})}

  def apply(self, params: Params, x: jax.Array, *, key: jax.Array | None = None,
            deterministic: bool = True, tau=1.0,
            gates: dict[str, jax.Array] | None = None
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Forward pass with channel gating (MetaGater eq. 1).

    Args:
      params: ``{'theta', 'phi'}`` as made by ``init``.
      x: (B, H, W, C) float32 images (the MLP flattens them).
      key: PRNG key of the Gumbel noise; layer ``i`` uses ``fold_in(key, i)``.
        Needed when ``deterministic=False`` (unless every gate is forced).
      deterministic: ``True``: inference gates ``1[z > 0]``; ``False``:
        straight-through Gumbel-softmax gates with temperature ``tau``.
      tau: Gumbel-softmax temperature (may be traced).
      gates: optional ``{layer: mask}`` with mask (B, C_l) or (C_l,) forced in
        place of the gate module's output; any hidden layer may be forced,
        gated or not.

    Returns:
      ``(logits (B, num_classes), gates)`` where ``gates`` maps each gated or
      forced layer to the (B, C_l) float32 0/1 mask that was applied.
    """
    if tuple(x.shape[1:]) != tuple(self.input_shape):
      raise ValueError(f'{self.name} expects inputs of shape (B,) + '
                       f'{tuple(self.input_shape)}, got {tuple(x.shape)}.')
    forced = self._check_forced(gates or {})
    return self.module.apply({'params': params}, x, key=key,
                             deterministic=deterministic, tau=tau, gates=forced)

  def _check_forced(self, gates: dict[str, jax.Array]) -> dict[str, jax.Array]:
    for name, m in gates.items():
      if name not in self.gateable_layers:
        raise ValueError(f'Cannot force gates on {name!r}: gateable layers of '
                         f'{self.name} are {self.gateable_layers}.')
      channels = self.layer(name).features
      if jnp.ndim(m) not in (1, 2) or jnp.shape(m)[-1] != channels:
        raise ValueError(f'Forced gates for {name!r} must have shape (B, '
                         f'{channels}) or ({channels},), got {jnp.shape(m)}.')
    return gates


def _gated_layer_names(name, specs, gating_on, gated_layers):
  """Validated gated layer names in layer order (see ``build``)."""
  gateable = tuple(spec.name for spec in specs[:-1])
  if gated_layers is None or len(gated_layers) == 0:
    gated_layers = DEFAULT_GATED_LAYERS[name]
  elif isinstance(gated_layers, str):
    gated_layers = (gated_layers,)
  unknown = [layer for layer in gated_layers if layer not in gateable]
  if unknown:
    raise ValueError(f'Unknown gated layer(s) {unknown} for model {name!r}; '
                     f'gateable layers are {gateable}.')
  if not gating_on:
    return ()
  return tuple(layer for layer in gateable if layer in gated_layers)


def build(name: str, *, input_shape, num_classes: int, gating: bool = True,
          gated_layers=None, gate_hidden: int = 16) -> Model:
  """The model called ``name`` for a dataset's input shape and classes.

  Args:
    name: one of ``NAMES``.
    input_shape: (H, W, C) of one example.
    num_classes: number of classes C.
    gating: ``False`` gives the plain backbone (``phi == {}``).
    gated_layers: layer names carrying a gate; ``None`` or empty means the
      paper's default (``DEFAULT_GATED_LAYERS``). Names are checked even when
      ``gating=False``.
    gate_hidden: hidden width of the gate MLPs (16 in the paper).

  Returns:
    A ``Model``.

  Raises:
    ValueError: unknown model or layer name, or an input too small to pool.
  """
  if name not in NAMES:
    raise ValueError(f'Unknown model {name!r}; expected one of {NAMES}.')
  input_shape = tuple(int(d) for d in input_shape)
  if len(input_shape) != 3 or min(input_shape) < 1:
    raise ValueError(f'input_shape must be (H, W, C) of one example, got '
                     f'{input_shape}.')
  if int(num_classes) < 1:
    raise ValueError(f'num_classes must be positive, got {num_classes}.')
  specs = _chain(input_shape, _blueprint(name, int(num_classes)))
  return Model(
      name=name, input_shape=input_shape, num_classes=int(num_classes),
      layers=specs,
      gated_layers=_gated_layer_names(name, specs, gating, gated_layers),
      gate_hidden=int(gate_hidden))
