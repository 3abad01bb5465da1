"""Compute accounting: multiply-accumulates (MACs) and parameter counts.

Channel gating saves compute only through the channels it switches off, and
a channel that is off saves work twice: its own filter in the gated layer and
its input slice in the next layer. ``macs`` counts both, per example, so the
reported saving is the real one (docs/design.md s.4), not just the fraction of
channels off.

Counted: convolutions ``H_out * W_out * kh * kw * C_in * C_out``, dense layers
``d_in * d_out`` and, for a gated network, each gate MLP
``d_s * hidden + hidden * C_out`` (``d_s`` = C_in for a conv, d_in for dense).
Not counted: bias adds, activations, pooling and the gate's global average
pool (all linear in the activations, small next to the products), and no
saving is assumed inside the gate MLPs. Counts come from the static layer
list (``Model.layers``), not from tracing the flax modules, so they are plain
integers, known before any parameter exists.

Example (cnn4, 32x32x3, 10 classes)::

  dense = macs(model)                  # 10,342,400.0
  _, g = model.apply(params, x)        # g['conv3']: (B, 128)
  ratio = macs(model, g) / dense       # compute of the gated net vs dense
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mg.models import networks


def layer_macs(model: networks.Model) -> dict[str, int]:
  """Dense MACs per example of each backbone layer, in layer order."""
  out = {}
  for spec in model.layers:
    if spec.kind == 'conv':
      h, w, c_in = spec.in_shape
      out[spec.name] = (h * w * networks.KERNEL_SIZE ** 2 * c_in
                        * spec.features)
    else:
      out[spec.name] = spec.in_channels * spec.features
  return out


def gate_macs(model: networks.Model) -> int:
  """MACs per example of all gate MLPs of ``model``."""
  total = 0
  for name in model.gated_layers:
    spec = model.layer(name)
    total += (spec.in_channels * model.gate_hidden
              + model.gate_hidden * spec.features)
  return total


def macs(model: networks.Model, gates: dict[str, jax.Array] | None = None):
  """MACs per example of the dense backbone, or of the gated network.

  Args:
    model: the ``Model``.
    gates: ``None`` for the dense backbone (no gate modules). Otherwise
      ``{layer: (B, C) or (C,) 0/1 masks}`` (e.g. the gates returned by
      ``model.apply``); layers absent from the dict count all channels on.

  Returns:
    ``None`` gates: a Python ``float``, the dense count. With gates: a float32
    ``jax.Array`` scalar (jit-safe), the batch mean of each example's count
    ``sum_l dense_l * (n_in_l / C_in_l) * (n_out_l / C_out_l)`` (``n`` = on
    channels of the gated input / output, the whole width when not gated)
    plus ``gate_macs(model)``. Channel counts multiply per example before
    averaging, which matters for consecutive gated layers.
  """
  per_layer = layer_macs(model)
  if gates is None:
    return float(sum(per_layer.values()))
  for name in gates:
    model.next_layer(name)  # raises for an unknown name or the classifier
  on = {name: jnp.sum(jnp.atleast_2d(jnp.asarray(g)) > 0.5, axis=-1)
              .astype(jnp.float32) for name, g in gates.items()}
  total = jnp.zeros((), jnp.float32)
  previous = None
  for spec in model.layers:
    # Integer MACs per (input channel, output channel) pair: exact.
    c_in = (model.layer(previous).features if previous in on
            else spec.in_channels)
    unit = per_layer[spec.name] // (c_in * spec.features)
    n_in = on[previous] if previous in on else float(c_in)
    n_out = on[spec.name] if spec.name in on else float(spec.features)
    total = total + unit * n_in * n_out
    previous = spec.name
  return jnp.mean(total) + float(gate_macs(model))


def param_count(tree) -> int:
  """Number of scalars in a pytree of arrays (or of shape-dtype structs)."""
  return sum(math.prod(getattr(leaf, 'shape', None) or jnp.shape(leaf))
             for leaf in jax.tree.leaves(tree))
