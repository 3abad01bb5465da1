r"""Task subnetworks from gate statistics (MetaGater fast adaptation, stage II).

After stage I updates the gates on a target's support split, stage II updates
only the backbone weights of the channels the task uses (docs/design.md s.4):

.. math::

  \theta_j = \theta_0 - \eta_a \, M \odot \nabla_\theta L(\theta, \phi_j; D_s).

``kept_channels`` turns the support-set gates into per-layer channel sets and
``subnet_mask`` turns those into the pytree ``M`` over ``theta``: the kept
filters of each gated layer (kernel and bias) and the matching input slices of
the next layer. ``apply_mask`` multiplies a gradient tree by ``M``. ``theta``
is the flax backbone's tree: ``nn.Conv`` kernels are HWIO (output channel
last), ``nn.Dense`` kernels (d_in, d_out).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def kept_channels(gates: dict[str, jax.Array], valid: jax.Array,
                  keep_frac=0.0) -> dict[str, jax.Array]:
  """Channels on for at least ``keep_frac`` of the valid examples (and >= 1).

  Args:
    gates: ``{layer: (N, C) 0/1 masks}`` on a dataset (e.g. the support set).
    valid: (N,) 0/1 weights; padding rows (0) are ignored.
    keep_frac: fraction in [0, 1]; 0 keeps a channel on for any example.
      May be traced.

  Returns:
    ``{layer: (C,) bool}``.
  """
  valid = jnp.asarray(valid, jnp.float32)
  total = jnp.sum(valid)
  # Counts are whole numbers: a relative slack absorbs float32 rounding of
  # keep_frac * total without admitting the next smaller count.
  threshold = keep_frac * total * (1.0 - 1e-6)

  def keep(g):
    on = valid @ (jnp.asarray(g) > 0.5).astype(jnp.float32)
    return (on >= threshold) & (on > 0)

  return {name: keep(g) for name, g in gates.items()}


def subnet_mask(model, theta, keep: dict[str, jax.Array]):
  """The stage-II mask over ``theta``: 1 where a weight may change.

  For each layer ``l`` in ``keep`` (any hidden layer; layers absent from
  ``keep`` are not restricted):
    * ``theta[l].kernel[..., c]`` and ``theta[l].bias[c]`` get ``keep[l][c]``;
    * the next layer's input slice of channel ``c`` gets ``keep[l][c]``:
      ``kernel[:, :, c, :]`` for a conv; for a dense layer the rows ``r`` with
      ``r % C_l == c`` (NHWC flatten puts the channel fastest; after global
      pooling or a dense layer these are simply row ``c``).
  Masks multiply, so two consecutive gated layers (cnn7 ``conv5``, ``conv6``)
  restrict ``conv6.kernel`` on both its input and its output axis.

  Args:
    model: the ``mg.models.Model``.
    theta: the backbone tree (only shapes are read; jit-safe).
    keep: ``{layer: (C_l,) bool}``, e.g. from ``kept_channels``.

  Returns:
    A tree like ``theta`` of float32 arrays of the same shapes.
  """
  mask = jax.tree.map(lambda leaf: jnp.ones(jnp.shape(leaf), jnp.float32),
                      theta)
  for name, kept in keep.items():
    nxt = model.next_layer(name)  # raises for unknown names / the classifier
    channels = model.layer(name).features
    kept = jnp.asarray(kept).astype(jnp.float32)
    if kept.shape != (channels,):
      raise ValueError(f'keep[{name!r}] must have shape ({channels},), got '
                       f'{kept.shape}.')
    mask[name]['kernel'] = mask[name]['kernel'] * kept
    mask[name]['bias'] = mask[name]['bias'] * kept
    if nxt.kind == 'conv':
      rows = kept[:, None]
    else:
      rows = jnp.tile(kept, nxt.in_channels // channels)[:, None]
    mask[nxt.name]['kernel'] = mask[nxt.name]['kernel'] * rows
  return mask


def apply_mask(tree, mask):
  """Leaf-wise ``tree * mask`` (e.g. masked gradients); same structures."""
  return jax.tree.map(lambda t, m: t * jnp.asarray(m).astype(t.dtype),
                      tree, mask)
