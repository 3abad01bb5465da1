"""Backbone building blocks as pure functions over explicit parameters.

Every layer of the MetaGater networks (docs/design.md s.6) is one of two kinds:
a 3x3 ``SAME`` convolution over NHWC feature maps with an HWIO kernel, or a
dense layer. Parameters are plain dicts ``{'kernel', 'bias'}``; the functions
here hold no state, use static shapes only and are safe under ``jit``/``vmap``.

Pooling is *floor* pooling: a 2x2 max-pool of an odd-sized map drops the last
row/column (``VALID`` padding), e.g. MNIST 28 -> 14 -> 7 -> 3.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mg.models import initializers

Params = dict[str, jax.Array]

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


def conv2d(x: jax.Array, params: Params) -> jax.Array:
  """3x3 (any odd size) stride-1 ``SAME`` convolution plus bias.

  Args:
    x: (B, H, W, C_in) feature maps.
    params: ``{'kernel': (kh, kw, C_in, C_out), 'bias': (C_out,)}``.

  Returns:
    (B, H, W, C_out) pre-activations.
  """
  kernel = params['kernel']
  if kernel.shape[2] <= PATCH_CONV_MAX_CHANNELS:
    return _patch_conv(x, kernel) + params['bias']
  # One plain convolution op: it is the hot spot of every local solve.
  y = jax.lax.conv_general_dilated(
      x, kernel, window_strides=(1, 1), padding='SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return y + params['bias']


def _patch_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The same ``SAME`` convolution as one matmul over shifted-slice patches.

  Patch channel ``(i * kw + j) * C_in + c`` is input channel ``c`` at offset
  ``(i, j)``, the row-major order of ``kernel.reshape(kh * kw * C_in, C_out)``.
  """
  kh, kw, c_in, c_out = kernel.shape
  b, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  patches = jnp.concatenate(
      [padded[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)], axis=-1)
  y = patches.reshape(b * h * w, kh * kw * c_in) @ kernel.reshape(kh * kw * c_in, c_out)
  return y.reshape(b, h, w, c_out)


def dense(x: jax.Array, params: Params) -> jax.Array:
  """``x @ kernel + bias`` for x of shape (B, d_in)."""
  return x @ params['kernel'] + params['bias']


def flatten(x: jax.Array) -> jax.Array:
  """(B, H, W, C) -> (B, H*W*C) in NHWC order: the channel is the fastest axis.

  Row ``r`` of the next dense kernel therefore reads channel ``r % C``
  (used by ``mg.models.subnet_mask``).
  """
  return x.reshape(x.shape[0], -1)


def max_pool(x: jax.Array, window: int = 2) -> jax.Array:
  """Non-overlapping ``window x window`` max-pool with floor (``VALID``) sizes.

  Written as crop + reshape + max: same result as ``lax.reduce_window`` with
  ``VALID`` padding, and its gradient is a plain elementwise select rather
  than a ``select_and_scatter`` (faster on CPU, batches cleanly under vmap).
  """
  b, h, w, c = x.shape
  ho, wo = h // window, w // window
  x = x[:, :ho * window, :wo * window, :]
  x = x.reshape(b, ho, window, wo, window, c)
  return x.max(axis=(2, 4))


def global_average_pool(x: jax.Array) -> jax.Array:
  """(B, H, W, C) -> (B, C): mean over the spatial axes."""
  return x.mean(axis=(1, 2))


def pool(x: jax.Array, kind: str | None) -> jax.Array:
  """Applies the pooling named by ``kind`` (one of ``POOLS``)."""
  if kind is None:
    return x
  if kind == 'max':
    return max_pool(x)
  if kind == 'mean':
    return global_average_pool(x)
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


def conv_spec(kernel_size: int, c_in: int, c_out: int,
              gain: float = initializers.HE_GAIN):
  """Init spec of a conv: HWIO kernel N(0, gain / (kh*kw*C_in)), zero bias."""
  return {'kernel': initializers.Normal((kernel_size, kernel_size, c_in, c_out),
                                        gain),
          'bias': initializers.Constant((c_out,))}


def dense_spec(d_in: int, d_out: int, gain: float = initializers.HE_GAIN):
  """Init spec of a dense layer: kernel N(0, gain / d_in), zero bias."""
  return {'kernel': initializers.Normal((d_in, d_out), gain),
          'bias': initializers.Constant((d_out,))}
