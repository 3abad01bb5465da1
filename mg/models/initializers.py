"""Parameter initialisation from a declarative tree of leaf specifications.

A model describes its parameters as a pytree of ``Normal`` / ``Constant``
leaves; ``materialize`` turns it into arrays. All normal leaves of one tree
come from a single flat draw of standard normals, sliced and scaled per leaf:
one random-bits kernel instead of one per leaf keeps ``init`` fast to compile
(each distinct draw shape is a separate Threefry program).

Scaling (variance ``gain / fan_in``, fan-in = product of all but the last
axis, i.e. ``kh * kw * C_in`` for an HWIO kernel and ``d_in`` for dense):
  * ``gain = 2``: He et al. (2015), for layers followed by a ReLU;
  * ``gain = 1``: LeCun et al. (1998), for linear outputs.
Untruncated normals, as in those papers.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

HE_GAIN = 2.0
LECUN_GAIN = 1.0


class Normal(NamedTuple):
  """A kernel drawn from N(0, gain / fan_in)."""
  shape: tuple[int, ...]
  gain: float


class Constant(NamedTuple):
  """An array filled with ``value``."""
  shape: tuple[int, ...]
  value: float = 0.0


def _is_spec(x) -> bool:
  return isinstance(x, (Normal, Constant))


def materialize(key: jax.Array, specs):
  """Arrays (float32) for a pytree of ``Normal``/``Constant`` leaves.

  Leaves are visited in ``jax.tree`` order; the draw depends only on the
  tree's normal leaves, so two trees with the same ``Normal`` leaves get the
  same values from the same key.
  """
  leaves, treedef = jax.tree.flatten(specs, is_leaf=_is_spec)
  sizes = [math.prod(leaf.shape) for leaf in leaves
           if isinstance(leaf, Normal)]
  flat = jax.random.normal(key, (sum(sizes),), jnp.float32)
  out, offset = [], 0
  for leaf in leaves:
    if isinstance(leaf, Normal):
      size = math.prod(leaf.shape)
      fan_in = math.prod(leaf.shape[:-1])
      z = flat[offset:offset + size].reshape(leaf.shape)
      out.append(z * math.sqrt(leaf.gain / fan_in))
      offset += size
    elif isinstance(leaf, Constant):
      out.append(jnp.full(leaf.shape, leaf.value, jnp.float32))
    else:
      raise TypeError(f'Expected Normal or Constant leaves, got {leaf!r}.')
  return jax.tree.unflatten(treedef, out)
