"""Weighted classification loss and accuracy over padded batches.

Task datasets are padded to a common size with a 0/1 validity weight per row
(``mg.data.TaskArrays.mask``), so ``L(x; D)`` of docs/design.md (notation) is the
weighted mean over the real rows. Both helpers return 0, never NaN, when every
weight is 0 (an empty task), and so does the gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _weighted_mean(values: jax.Array, weights: jax.Array | None) -> jax.Array:
  if weights is None:
    return jnp.mean(values)
  weights = jnp.asarray(weights, values.dtype)
  return jnp.sum(weights * values) / jnp.maximum(jnp.sum(weights), 1.0)


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  weights: jax.Array | None = None) -> jax.Array:
  r"""Weighted mean softmax cross-entropy.

  .. math::

    \frac{\sum_b w_b \, (\log \sum_k e^{o_{bk}} - o_{b y_b})}
          {\max(\sum_b w_b, 1)}

  Args:
    logits: (B, K).
    labels: (B,) integer classes.
    weights: (B,) 0/1 validity weights; ``None`` means all ones.
  """
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return _weighted_mean(losses, weights)


def accuracy(logits: jax.Array, labels: jax.Array,
             weights: jax.Array | None = None) -> jax.Array:
  """Weighted fraction of rows whose arg-max logit is the label."""
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return _weighted_mean(correct, weights)
