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
per channel.

What is flax and what is the project's own: ``Gate`` is a ``flax.linen``
module, two ``nn.Dense`` layers named ``hidden`` and ``out`` with flax
initialisers, so the gate parameters of one layer are ``{'hidden': {'kernel',
'bias'}, 'out': {'kernel', 'bias'}}``; group ``c`` of the group lasso
(docs/design.md s.2) is ``out.kernel[:, c]`` with ``out.bias[c]``. The
straight-through mask and its single logistic draw are the method's own (no
library has them), as pure functions of the logits.

References:
  Jang, Gu, Poole, "Categorical reparameterization with Gumbel-softmax",
  ICLR 2017. Maddison, Mnih, Teh, "The concrete distribution", ICLR 2017.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp



def _one_program(init):
  """``init(key, shape, dtype)`` compiled as one program (shape, dtype static).

  The draw and its scaling then round alike whether a caller's ``jit`` inlines
  them or ``Model.init`` (flax's ``lazy_init``) runs them eagerly: an eager
  multiply after the compiled draw differed from the fused one by 1 ulp.
  """
  return jax.jit(init, static_argnums=(1, 2))


# The kernel initialisers of every MetaGater layer, backbone and gate alike:
# N(0, gain / fan_in), untruncated as in the papers (fan-in = kh * kw * C_in for
# an HWIO kernel, d_in for dense). Gain 2 (He et al., 2015) before a ReLU, gain 1
# (LeCun et al., 1998) for a linear output. flax's ``he_normal`` and
# ``lecun_normal`` truncate, hence ``variance_scaling`` with 'normal'.
HE_NORMAL = _one_program(nn.initializers.variance_scaling(2.0, 'fan_in', 'normal'))
LECUN_NORMAL = _one_program(nn.initializers.variance_scaling(1.0, 'fan_in', 'normal'))

# The output bias starts positive so that sigma(z) ~ 0.95 and almost every
# channel is on at first: the backbone then trains as a dense network, and the
# group lasso on phi later switches whole channels off (docs/design.md s.2). With a
# zero bias half of the channels would start off and receive no gradient.
OUT_BIAS_INIT = 3.0


def summary(a: jax.Array) -> jax.Array:
  """The gate's view of a layer input: GAP of a (B,H,W,C) map, else ``a``."""
  if a.ndim == 4:
    return a.mean(axis=(1, 2))
  return a


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


class Gate(nn.Module):
  """The gate MLP ``summary -> hidden (ReLU) -> channels`` of one gated layer.

  Initialisation: He normal hidden kernel, LeCun normal output kernel, zero
  hidden bias, ``out_bias`` logit bias (see ``OUT_BIAS_INIT``).

  Attributes:
    channels: number of gated output channels ``C_out``.
    hidden: hidden width (16 in the paper).
    out_bias: initial logit bias ``b_2``.
  """
  channels: int
  hidden: int = 16
  out_bias: float = OUT_BIAS_INIT

  @nn.compact
  def __call__(self, a: jax.Array, *, key: jax.Array | None = None,
               deterministic: bool = True, tau=1.0) -> jax.Array:
    """The (B, C_out) channel mask of a gated layer whose input is ``a``.

    Args:
      a: the gated layer's input, (B, H, W, C_in) or (B, d_in).
      key: PRNG key of this layer's Gumbel noise; needed when training.
      deterministic: ``True``: ``1[z > 0]``; ``False``: straight-through.
      tau: Gumbel-softmax temperature (may be traced).
    """
    h = nn.relu(nn.Dense(self.hidden, kernel_init=HE_NORMAL,
                         name='hidden')(summary(a)))
    z = nn.Dense(self.channels, kernel_init=LECUN_NORMAL,
                 bias_init=nn.initializers.constant(self.out_bias),
                 name='out')(h)
    if deterministic:
      return inference_mask(z)
    if key is None:
      raise ValueError('Training gates (deterministic=False) need a PRNG `key` '
                       'for the Gumbel noise.')
    return straight_through_mask(z, key, tau)
