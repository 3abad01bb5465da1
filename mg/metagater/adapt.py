"""Fast adaptation at a target node and its evaluation (docs/design.md s.4-5).

Every method hands a target node a model and adapts it with one gradient step
per stage on the target's *support* split only; the query split is used only
to score the adapted model (pFedMe's public code leaks the query split into
adaptation: that bug is designed out here, since ``adapt_*`` never receive it).

* ``one_step``: one gradient step on the backbone (FedAvg, Per-FedAvg,
  MetaGater w/o gating; the MetaGater paper's fine-tuning protocol).
* ``two_stage``: MetaGater's fast adaptation. Stage I moves the gating module
  ``phi`` one step with the backbone fixed; Stage II computes the task's
  channel mask from the adapted gates and moves only the selected sub-network
  of ``theta`` one step (a pytree mask over ``theta``).
* ``snip``: MetaSNIP: SNIP saliency ``|theta * grad L|`` (Lee et al., ICLR
  2019) on the support split keeps the top weights of the gated layers at a
  given sparsity, then one masked step. Its sparsity is *weight* sparsity:
  dense hardware saves nothing from it.
* ``snip_filters``: structured MetaSNIP: the same saliency summed over each
  filter of the gated layers keeps the top filters at a given *channel*
  sparsity (pruned filters and the next layer's matching input slices are
  zero), then one masked step: the like-for-like comparison with MetaGater's
  channel sparsity on dense hardware.

``evaluate`` scores a model on a query split with deterministic,
data-dependent gates: accuracy, channel sparsity and MACs relative to dense,
and whether every logit was finite (an accuracy of non-finite logits is not a
result: runs and sweeps mark it diverged).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mg import data
from mg import models
from mg.federated import local


class Evaluation(NamedTuple):
  """Per-target scores on the query split."""
  accuracy: jax.Array
  sparsity: jax.Array     # fraction of gated channels off, mean over inputs
  macs_ratio: jax.Array   # MACs of the computed network / dense MACs
  finite: jax.Array = True  # every logit finite (else the scores mean nothing)


def all_finite(tree) -> jax.Array:
  """Whether every floating-point leaf of ``tree`` is finite (a scalar bool)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.result_type(x), jnp.floating)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _loss(model, params, batch, *, key=None, deterministic=True, tau=1.0):
  x, y, w = batch
  logits, _ = model.apply(params, x, key=key, deterministic=deterministic, tau=tau)
  return data.masked_mean(optax.softmax_cross_entropy_with_integer_labels(logits, y), w)


def _step(params, grads, lr, mask=None):
  if mask is not None:
    grads = models.apply_mask(grads, mask)
  return jax.tree.map(lambda p, g: p - lr * g, params, grads)


def one_step(model, params, support, key, *, lr, batch_size=0):
  """``theta_j = theta_0 - lr * grad L(theta_0; D_s)``: one step, whole model."""
  batch = local.sample_batch(support, key, batch_size)
  grads = jax.grad(lambda p: _loss(model, p, batch))(params)
  return _step(params, grads, lr)


def two_stage(model, params, support, key, *, lr, keep_frac=0.0, batch_size=0,
              tau=1.0, gate_step=True):
  """MetaGater's two one-step stages (docs/design.md s.4).

  Stage I: ``phi_j = phi_0 - lr * grad_phi L(theta_0, phi; D_s)``, the gates in
  their straight-through training form (deterministic hard gates have no
  gradient); ``gate_step=False`` skips it (``phi_j = phi_0``: the meta-gate as
  trained, the ablation that asks what the meta-gating module transfers).
  Stage II: channels kept where the adapted deterministic gates are on for
  more than ``keep_frac`` of the support examples; ``theta_j = theta_0 -
  lr * mask * grad_theta L(theta, phi_j; D_s)`` with the subnet mask.

  Returns:
    ``(params_j, keep)``: adapted parameters, kept channels per gated layer.
  """
  batch_key, gate_key = jax.random.split(key)
  batch = local.sample_batch(support, batch_key, batch_size)
  theta, phi = params['theta'], params['phi']

  def phi_loss(phi_):
    return _loss(model, {'theta': theta, 'phi': phi_}, batch, key=gate_key,
                 deterministic=False, tau=tau)

  phi_j = _step(phi, jax.grad(phi_loss)(phi), lr) if gate_step else phi
  _, gates = model.apply({'theta': theta, 'phi': phi_j}, support.x, deterministic=True)
  keep = models.kept_channels(gates, support.mask, keep_frac)
  mask = models.subnet_mask(model, theta, keep)

  def theta_loss(theta_):
    return _loss(model, {'theta': theta_, 'phi': phi_j}, batch)

  theta_j = _step(theta, jax.grad(theta_loss)(theta), lr, mask)
  return {'theta': theta_j, 'phi': phi_j}, keep


def snip_mask(model, theta, batch, sparsity, layers):
  """SNIP connection saliency ``|theta * dL/dtheta|`` over ``layers``' kernels.

  The top ``1 - sparsity`` fraction of those weights (pooled over the layers)
  is kept; other leaves are kept whole. Returns a float mask like ``theta``.
  """
  grads = jax.grad(lambda t: _loss(model, {'theta': t, 'phi': {}}, batch))(theta)
  saliency = jnp.concatenate([
      jnp.abs(theta[l]['kernel'] * grads[l]['kernel']).ravel() for l in layers])
  n = saliency.shape[0]
  num_pruned = jnp.clip(jnp.round(sparsity * n).astype(jnp.int32), 0, n - 1)
  # Ranks, not a threshold: many saliencies tie at exactly 0 (dead units).
  keep = jnp.argsort(jnp.argsort(saliency)) >= num_pruned
  mask = jax.tree.map(jnp.ones_like, theta)
  offset = 0
  for l in layers:
    kernel = theta[l]['kernel']
    kernel_mask = keep[offset:offset + kernel.size].reshape(kernel.shape)
    mask[l] = dict(mask[l], kernel=kernel_mask.astype(kernel.dtype))
    offset += kernel.size
  return mask


def snip(model, params, support, key, *, lr, sparsity, layers, batch_size=0):
  """MetaSNIP at a target: prune by SNIP at ``sparsity``, then one masked step.

  Returns:
    ``(params_j, kept_fraction)`` with pruned weights set to zero.
  """
  batch = local.sample_batch(support, key, batch_size)
  theta = params['theta']
  mask = snip_mask(model, theta, batch, sparsity, layers)
  pruned = models.apply_mask(theta, mask)
  grads = jax.grad(lambda t: _loss(model, {'theta': t, 'phi': {}}, batch))(pruned)
  theta_j = models.apply_mask(_step(pruned, grads, lr, mask), mask)
  kept = (sum(jnp.sum(mask[l]['kernel']) for l in layers)
          / sum(mask[l]['kernel'].size for l in layers))
  return {'theta': theta_j, 'phi': {}}, kept


def snip_filters(model, params, support, key, *, lr, sparsity, layers, batch_size=0):
  """Structured MetaSNIP: prune whole filters by summed SNIP saliency.

  A filter's saliency is ``sum |theta * dL/dtheta|`` over its kernel slice and
  bias in a gated layer; the ``round(sparsity * C)`` least salient of the ``C``
  filters pooled over ``layers`` are pruned (at least one is kept). The subnet
  mask of the kept filters (``mg.models.subnet_mask``: their kernels and
  biases and the next layer's input slices) zeroes the pruned ones, then one
  masked gradient step adapts the rest.

  Returns:
    ``(params_j, keep)``: adapted parameters, ``{layer: (C_l,) bool}`` kept
    filters.
  """
  batch = local.sample_batch(support, key, batch_size)
  theta = params['theta']
  grads = jax.grad(lambda t: _loss(model, {'theta': t, 'phi': {}}, batch))(theta)

  def filter_saliency(l):
    kernel = jnp.abs(theta[l]['kernel'] * grads[l]['kernel'])
    return (jnp.sum(kernel.reshape(-1, kernel.shape[-1]), axis=0)
            + jnp.abs(theta[l]['bias'] * grads[l]['bias']))

  saliency = jnp.concatenate([filter_saliency(l) for l in layers])
  n = saliency.shape[0]
  num_pruned = jnp.clip(jnp.round(sparsity * n).astype(jnp.int32), 0, n - 1)
  kept = jnp.argsort(jnp.argsort(saliency)) >= num_pruned
  keep, offset = {}, 0
  for l in layers:
    width = theta[l]['bias'].shape[0]
    keep[l] = kept[offset:offset + width]
    offset += width
  mask = models.subnet_mask(model, theta, keep)
  pruned = models.apply_mask(theta, mask)
  grads = jax.grad(lambda t: _loss(model, {'theta': t, 'phi': {}}, batch))(pruned)
  theta_j = models.apply_mask(_step(pruned, grads, lr, mask), mask)
  return {'theta': theta_j, 'phi': {}}, keep


def evaluate(model, params, query) -> Evaluation:
  """Query accuracy, channel sparsity and MAC ratio with inference gates."""
  logits, gates = model.apply(params, query.x, deterministic=True)
  weights = query.mask
  correct = (jnp.argmax(logits, axis=-1) == query.y).astype(jnp.float32)
  accuracy = data.masked_mean(correct, weights)
  finite = jnp.all(jnp.isfinite(logits))
  if not gates:
    return Evaluation(accuracy, jnp.zeros(()), jnp.ones(()), finite)
  off = sum(jnp.sum(1.0 - g, axis=-1) for g in gates.values())
  channels = sum(g.shape[-1] for g in gates.values())
  total = jnp.maximum(jnp.sum(weights), 1.0)
  sparsity = jnp.sum(weights * off / channels) / total
  per_example = jax.vmap(
      lambda g: models.macs(model, jax.tree.map(lambda a: a[None], g)))(gates)
  macs_ratio = jnp.sum(weights * per_example) / total / models.macs(model)
  return Evaluation(accuracy, sparsity, macs_ratio, finite)
