"""The MetaGater networks (docs/design.md s.6) as pure ``init``/``apply`` functions.

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

Parameters are ``{'theta': {layer: {'kernel', 'bias'}}, 'phi': {layer:
{'hidden': {...}, 'out': {...}}}}``; ``phi == {}`` without gates. ``theta`` is
drawn from the key independently of the gating choice, so a gated model and
its plain backbone built with the same key share the same ``theta``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mg.models import gating
from mg.models import initializers
from mg.models import layers

NAMES = ('mlp', 'cnn4', 'cnn7')
DEFAULT_GATED_LAYERS = {
    'mlp': ('hidden',),
    'cnn4': ('conv3',),
    'cnn7': ('conv5', 'conv6'),
}
MLP_HIDDEN = 100
KERNEL_SIZE = 3

Params = dict[str, Any]


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
      shape = layers.pooled_shape(shape, pool)
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

  def param_specs(self):
    """``{'theta', 'phi'}`` as trees of ``mg.models.initializers`` leaves."""
    theta, phi = {}, {}
    for spec in self.layers:
      gain = (initializers.HE_GAIN if spec.relu
              else initializers.LECUN_GAIN)
      if spec.kind == 'conv':
        theta[spec.name] = layers.conv_spec(
            KERNEL_SIZE, spec.in_channels, spec.features, gain)
      else:
        theta[spec.name] = layers.dense_spec(
            spec.in_channels, spec.features, gain)
      if spec.name in self.gated_layers:
        phi[spec.name] = gating.gate_spec(
            spec.in_channels, spec.features, self.gate_hidden)
    return {'theta': theta, 'phi': phi}

  def init(self, key: jax.Array) -> Params:
    """Fresh ``{'theta': ..., 'phi': ...}``.

    Backbone kernels: He normal before a ReLU, LeCun normal for the
    classifier; zero biases. Gates: ``gating.gate_spec`` (positive logit
    bias, so gates start on). ``theta`` and ``phi`` use independent halves
    of ``key``, so gated and ungated models built from one key share
    ``theta``.
    """
    key_theta, key_phi = jax.random.split(key)
    specs = self.param_specs()
    return {'theta': initializers.materialize(key_theta, specs['theta']),
            'phi': initializers.materialize(key_phi, specs['phi'])}

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
    theta, phi = params['theta'], params['phi']
    applied = {}
    h = x
    for index, spec in enumerate(self.layers):
      if spec.kind == 'dense' and h.ndim > 2:
        h = layers.flatten(h)
      if spec.kind == 'conv':
        out = layers.conv2d(h, theta[spec.name])
      else:
        out = layers.dense(h, theta[spec.name])
      if spec.relu:
        out = jax.nn.relu(out)
      m = None
      if spec.name in forced:
        m = jnp.broadcast_to(
            jnp.asarray(forced[spec.name], jnp.float32),
            (h.shape[0], spec.features))
      elif spec.name in self.gated_layers:
        layer_key = None if key is None else jax.random.fold_in(key, index)
        m = gating.mask(phi[spec.name], h, key=layer_key,
                        deterministic=deterministic, tau=tau)
      if m is not None:
        out = out * (m[:, None, None, :] if out.ndim == 4 else m)
        applied[spec.name] = m
      h = layers.pool(out, spec.pool)
    return h, applied

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
