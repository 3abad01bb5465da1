r"""Server rules over clients that hold different parts of the model, on the device.

With heterogeneous clients (docs/design.md s.11, s.13) a client trains and
uploads only part of the global model: the blocks up to its exit, some exit
heads, a width slice. Every client's upload here is a tree of the global
trainable parameters' shapes, stacked over the sampled clients (``(C, ...)``),
with a *held mask* per parameter saying which entries each client holds:
``(C,)`` for a whole tensor, ``(C, D)`` for the rows of a stacked block
parameter (``D`` blocks), or the parameter's full shape for a slice. Masks
come from a per-tier table (:func:`mask_table`) gathered by the clients'
tiers, so the composition of a round is data and the rules compile once.

Each rule is a pure function of arrays, summed with the compensated
arithmetic of :mod:`mg.federated.compensated` so that it matches the float64
host computation it replaces to within a float32 rounding of the result.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mg.federated import compensated as cf


def mask_table(held_paths: Sequence[set], trainable: dict) -> dict:
  """``{path: (E, ...) bool}``: which entries of each trainable parameter tier ``t`` holds.

  Args:
    held_paths: per tier, the per-block paths it holds (``blocks/3/q/kernel``
      for row 3 of the stacked ``blocks/q/kernel``; other paths as they are).
    trainable: the global trainable parameters (or shapes) by path, blocks
      stacked along their leading axis.
  """
  table = {}
  for k, v in trainable.items():
    if k.startswith('blocks/'):
      rest = k[len('blocks/'):]
      table[k] = np.array([[f'blocks/{i}/{rest}' in paths for i in range(v.shape[0])]
                           for paths in held_paths])
    else:
      table[k] = np.array([k in paths for paths in held_paths])
  return table


def gather_masks(table: dict, tiers) -> dict:
  """The (C, ...) held masks of clients of ``tiers`` (C,) from a :func:`mask_table`."""
  return {k: jnp.asarray(v)[tiers] for k, v in table.items()}


def expand(mask, ndim: int):
  """A (C, r...) mask shaped to broadcast against a (C, ...) array of ``ndim`` axes."""
  return mask.reshape(mask.shape + (1,) * (ndim - mask.ndim))


def ravel(values: dict, keys) -> jax.Array:
  """One (P,) vector of ``values[k]``, ``k`` in ``keys``, each raveled, in order."""
  return jnp.concatenate([jnp.ravel(values[k]) for k in keys])


def ravel_clients(arrays: list) -> jax.Array:
  """(C, ...) arrays -> one (C, P) array (each flattened after the client axis)."""
  return jnp.concatenate([a.reshape(a.shape[0], -1) for a in arrays], axis=1)


def unravel(vector, like: dict, keys=None) -> dict:
  """The inverse of :func:`ravel` over the same ``keys`` (default: all of ``like``, in order)."""
  out, start = {}, 0
  for k in like if keys is None else keys:
    shape = like[k].shape
    size = int(np.prod(shape))
    out[k] = vector[start:start + size].reshape(shape)
    start += size
  return out


def _held_vectors(uploads: dict, weights, held: dict, keys) -> tuple[cf.DF, cf.DF]:
  """``(num, den)`` over every entry of ``keys`` raveled: ``sum_c w_c m_c x_c``, ``sum_c w_c m_c``."""
  x = ravel_clients([uploads[k] for k in keys])
  m = ravel_clients([jnp.broadcast_to(expand(held[k], uploads[k].ndim), uploads[k].shape)
                     for k in keys]).astype(jnp.float32)
  wm = jnp.asarray(weights, jnp.float32)[:, None] * m            # exact: m is 0 or 1
  # A row a client does not hold may be anything (even non-finite): zeroed, not multiplied.
  x = jnp.where(m > 0, x, 0.0)
  return cf.dot(wm, x), cf.dot(jnp.ones_like(wm), wm)


def _mean(num: cf.DF, den: cf.DF):
  """``num / den`` where ``den > 0`` (else 0), and ``den > 0``."""
  some = den.hi > 0
  return cf.div(num, cf.where(some, den, cf.of(1.0))), some


def held_mean(old: dict, uploads: dict, weights, held: dict) -> dict:
  """Each entry: the ``weights``-weighted mean over the clients that hold it; else ``old``.

  The server of ReeFL and of the baselines' ``EarlyExitFedAvg`` (weights = the
  clients' example counts) and ScaleFL's count mean (weights = 1, masks = the
  clients' width slices).
  """
  keys = [k for k in old if k in uploads]
  num, den = _held_vectors(uploads, weights, held, keys)
  theta = ravel(old, keys)

  def rule(nh, nl, dh, dl, theta):
    mean, some = _mean(cf.DF(nh, nl), cf.DF(dh, dl))
    return jnp.where(some, mean.value(), theta)

  new = unravel(cf.elementwise(rule, *num, *den, theta), old, keys)
  return {k: new.get(k, v) for k, v in old.items()}


def feddyn(old: dict, h: dict, uploads: dict, held: dict, num_clients: int,
           alpha: float) -> tuple[dict, dict]:
  r"""FedDyn's server step per entry, over the ``n`` sampled clients that hold it.

  .. math::

    \bar\theta = \frac{1}{n} \sum_i \theta_i, \quad
    h \leftarrow h - \alpha \frac{n}{N} (\bar\theta - \theta), \quad
    \theta \leftarrow \bar\theta - h / \alpha

  (Acar et al., ICLR 2021; unweighted, as DepthFL's code). An entry no client
  holds keeps its value and its ``h``. Returns (new parameters, new ``h``).
  """
  keys = [k for k in old if k in uploads]
  ones = jnp.ones((uploads[keys[0]].shape[0],), jnp.float32)
  num, count = _held_vectors(uploads, ones, held, keys)
  theta, h0 = ravel(old, keys), ravel(h, keys)
  a = float(alpha)

  def rule(nh, nl, ch, cl, theta, h0):
    n = cf.DF(ch, cl)
    mean, some = _mean(cf.DF(nh, nl), n)
    step = cf.mul(cf.mul(cf.div(cf.of(a), cf.of(float(num_clients))), n),
                  cf.sub(mean, cf.of(theta)))
    hk = cf.sub(cf.of(h0), step)
    new = cf.sub(mean, cf.div(hk, cf.of(a)))
    return jnp.where(some, new.value(), theta), jnp.where(some, hk.value(), h0)

  new, new_h = cf.elementwise(rule, *num, *count, theta, h0)
  new, new_h = unravel(new, old, keys), unravel(new_h, h, keys)
  return {k: new.get(k, v) for k, v in old.items()}, {k: new_h.get(k, v) for k, v in h.items()}


def all_finite(uploads: dict, held: dict) -> jax.Array:
  """Whether every held entry of every upload is finite (the divergence check)."""
  ok = [jnp.all(jnp.where(expand(held[k], x.ndim), jnp.isfinite(x), True))
        for k, x in uploads.items()]
  return jnp.all(jnp.stack(ok)) if ok else jnp.bool_(True)


def stack_clients(trees) -> dict:
  """``{path: (C, ...)}`` of C clients' flat trees (same paths and shapes)."""
  return {k: jnp.stack([t[k] for t in trees]) for k in trees[0]}


def held_sizes(table: dict, shapes: dict) -> list[int]:
  """Per tier, how many entries it holds (uploads) of parameters with ``shapes``."""
  tiers = len(next(iter(table.values())))
  return [sum(int(np.asarray(mask[t]).sum()) * int(np.prod(shapes[k].shape[np.ndim(mask) - 1:]))
              for k, mask in table.items()) for t in range(tiers)]
