r"""The channel-gating module of a gated layer (MetaGater eq. 1, docs/design.md s.1).

For a gated layer with input ``a`` and ``C_out`` output channels:

.. math::

  s = \mathrm{GAP}(a) \ (\text{conv}), \quad s = a \ (\text{dense}), \qquad
  z = W_2\, \mathrm{relu}(W_1 s + b_1) + b_2 \in \mathbb{R}^{C_{out}}.

Training uses the binary-concrete (2-class Gumbel-softmax) relaxation with a
straight-through estimator,

.. math::

  y = z + g_1 - g_2, \quad \mathrm{soft} = \sigma(y / \tau), \quad
  \mathrm{hard} = 1[y > 0], \quad m = \mathrm{hard} + \mathrm{soft}
  - \mathrm{sg}(\mathrm{soft}),

and inference the deterministic ``m = 1[z > 0]``. Masks are per example and
per channel. The gate parameters of one layer are
``{'hidden': {'kernel', 'bias'}, 'out': {'kernel', 'bias'}}``; group ``c`` of
the group lasso (docs/design.md s.2) is ``out.kernel[:, c]`` with ``out.bias[c]``.

References:
  Jang, Gu, Poole, "Categorical reparameterization with Gumbel-softmax",
  ICLR 2017. Maddison, Mnih, Teh, "The concrete distribution", ICLR 2017.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mg.models import initializers
from mg.models import layers

Params = dict[str, dict[str, jax.Array]]

# The output bias starts positive so that sigma(z) ~ 0.95 and almost every
# channel is on at first: the backbone then trains as a dense network, and the
# group lasso on phi later switches whole channels off (docs/design.md s.2). With a
# zero bias half of the channels would start off and receive no gradient.
OUT_BIAS_INIT = 3.0


def gate_spec(summary_dim: int, channels: int, hidden: int = 16,
              out_bias: float = OUT_BIAS_INIT):
  """Init spec of the gate MLP ``summary_dim -> hidden (ReLU) -> channels``.

  Args:
    summary_dim: size of the summary ``s`` (C_in for a conv, d_in for dense).
    channels: number of gated output channels ``C_out``.
    hidden: hidden width (16 in the paper).
    out_bias: initial logit bias ``b_2`` (see ``OUT_BIAS_INIT``).

  Returns:
    A tree of ``mg.models.initializers`` leaves (He normal hidden kernel,
    LeCun normal output kernel, zero hidden bias, ``out_bias`` logit bias).
  """
  return {'hidden': layers.dense_spec(summary_dim, hidden,
                                      initializers.HE_GAIN),
          'out': {'kernel': initializers.Normal((hidden, channels),
                                                initializers.LECUN_GAIN),
                  'bias': initializers.Constant((channels,), out_bias)}}


def summary(a: jax.Array) -> jax.Array:
  """The gate's view of a layer input: GAP of a (B,H,W,C) map, else ``a``."""
  if a.ndim == 4:
    return layers.global_average_pool(a)
  return a


def logits(phi: Params, s: jax.Array) -> jax.Array:
  """Per-channel gate logits ``z`` (B, C_out) from summaries ``s`` (B, d)."""
  h = jax.nn.relu(layers.dense(s, phi['hidden']))
  return layers.dense(h, phi['out'])


def inference_mask(z: jax.Array) -> jax.Array:
  """Deterministic mask ``1[z > 0]`` as float32 (no gradient reaches ``z``)."""
  return (z > 0).astype(jnp.float32)


def straight_through_mask(z: jax.Array, key: jax.Array, tau=1.0) -> jax.Array:
  """Hard 0/1 mask whose gradient is that of ``sigmoid((z + g1 - g2) / tau)``.

  ``g1 - g2`` of two independent Gumbel(0, 1) variables is exactly a standard
  logistic variable, so one logistic draw replaces the two Gumbel draws.

  Args:
    z: gate logits (B, C).
    key: PRNG key of this layer's noise.
    tau: temperature (may be traced, e.g. for a sweep under vmap).

  Returns:
    float32 mask equal to ``1[z + g1 - g2 > 0]`` exactly in the forward pass.
  """
  y = z + jax.random.logistic(key, z.shape, z.dtype)
  soft = jax.nn.sigmoid(y / tau)
  hard = (y > 0).astype(z.dtype)
  # Bracketed so the forward value is hard + 0, exactly 0 or 1 in floats.
  return hard + (soft - jax.lax.stop_gradient(soft))


def mask(phi: Params, a: jax.Array, *, key: jax.Array | None,
         deterministic: bool, tau=1.0) -> jax.Array:
  """The (B, C_out) channel mask of a gated layer whose input is ``a``."""
  z = logits(phi, summary(a))
  if deterministic:
    return inference_mask(z)
  if key is None:
    raise ValueError('Training gates (deterministic=False) need a PRNG `key` '
                     'for the Gumbel noise.')
  return straight_through_mask(z, key, tau)
