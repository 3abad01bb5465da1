r"""Double-float32 arithmetic: sums and quotients of float32 arrays to ~float64 accuracy.

A value is a pair ``(hi, lo)`` of float32 arrays with ``|lo| <= ulp(hi)/2``
that stands for ``hi + lo`` (about 48 significant bits). The building blocks
are the error-free transformations (Knuth's TwoSum; Dekker's split and
TwoProduct): ``a + b`` and ``a * b`` of two float32 numbers are each exactly a
float32 result plus a float32 error, which the pair carries on. Sums of many
terms accumulated this way are as accurate as if computed in twice the
working precision (Ogita, Rump and Oishi, "Accurate sum and dot product",
SIAM J. Sci. Comput. 26(6), 2005), so a server rule written with them
reaches the float64 host version to within one float32 rounding of its
result, on any backend and without ``jax_enable_x64`` (which would change
every array the program makes).

These rely on IEEE float32 operations being performed as written: XLA does
not reassociate floating-point arithmetic (no fast-math). A fused
multiply-add may replace ``a * b - p`` in :func:`two_prod`; that only makes
the error term exact.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_SPLIT = np.float32(4097.0)  # 2^12 + 1: splits a 24-bit significand into two halves


class DF(NamedTuple):
  """``hi + lo``, two float32 arrays (broadcastable to one another)."""
  hi: jnp.ndarray
  lo: jnp.ndarray

  def value(self) -> jnp.ndarray:
    """The nearest float32 array (``hi + lo`` rounded once)."""
    return self.hi + self.lo


def two_sum(a, b) -> DF:
  """``a + b`` exactly: the float32 sum and its rounding error (Knuth)."""
  s = a + b
  bb = s - a
  return DF(s, (a - (s - bb)) + (b - bb))


def _quick_two_sum(a, b) -> DF:
  """:func:`two_sum` for ``|a| >= |b|``."""
  s = a + b
  return DF(s, b - (s - a))


def _split(a):
  c = _SPLIT * a
  hi = c - (c - a)
  return hi, a - hi


def two_prod(a, b) -> DF:
  """``a * b`` exactly: the float32 product and its rounding error (Dekker)."""
  p = a * b
  ah, al = _split(a)
  bh, bl = _split(b)
  return DF(p, ((ah * bh - p) + ah * bl + al * bh) + al * bl)


def of(a) -> DF:
  """A float32 array (or a Python/NumPy float, split to 48 bits) as a pair."""
  if isinstance(a, (float, int, np.floating, np.integer)):
    hi = np.float32(a)
    return DF(jnp.float32(hi), jnp.float32(np.float64(a) - np.float64(hi)))
  a = jnp.asarray(a, jnp.float32)
  return DF(a, jnp.zeros_like(a))


def add(x: DF, y: DF) -> DF:
  """``x + y``, accurate to about 2^-47 relative to ``|x| + |y|``."""
  s = two_sum(x.hi, y.hi)
  t = two_sum(x.lo, y.lo)
  s = _quick_two_sum(s.hi, s.lo + t.hi)
  return _quick_two_sum(s.hi, s.lo + t.lo)


def neg(x: DF) -> DF:
  return DF(-x.hi, -x.lo)


def sub(x: DF, y: DF) -> DF:
  return add(x, neg(y))


def mul(x: DF, y: DF) -> DF:
  """``x * y`` to about 2^-46 relative."""
  p = two_prod(x.hi, y.hi)
  return _quick_two_sum(p.hi, p.lo + (x.hi * y.lo + x.lo * y.hi))


def div(x: DF, y: DF) -> DF:
  """``x / y`` to about 2^-46 relative (``y`` nonzero; two correction steps)."""
  q1 = x.hi / y.hi
  r = sub(x, mul(y, DF(q1, jnp.zeros_like(q1))))
  q2 = r.hi / y.hi
  r = sub(r, mul(y, DF(q2, jnp.zeros_like(q2))))
  q3 = r.hi / y.hi
  q = _quick_two_sum(q1, q2)
  return add(q, DF(q3, jnp.zeros_like(q3)))


def where(mask, x: DF, y: DF) -> DF:
  return DF(jnp.where(mask, x.hi, y.hi), jnp.where(mask, x.lo, y.lo))


def dot(weights, values) -> DF:
  """``sum_c weights[c] * values[c]`` over the leading axis, compensated.

  ``weights`` (C, ...) broadcastable against ``values`` (C, ...); each product is
  exact (:func:`two_prod`) and the running sum carries its error. A scan over
  ``c``: the program does not grow with C.
  """
  shape = jnp.broadcast_shapes(weights.shape[1:], values.shape[1:])

  def step(total, row):
    w, x = row
    return add(total, two_prod(jnp.broadcast_to(w, shape), jnp.broadcast_to(x, shape))), None

  zero = jnp.zeros(shape, jnp.float32)
  total, _ = jax.lax.scan(step, DF(zero, zero), (weights, values))
  return total


def elementwise(fn, *vectors, chunks: int = 2):
  """``fn(*vectors)`` for an elementwise ``fn`` of (P,) vectors, in a loop over ``chunks`` pieces.

  Compile-time, not arithmetic: every value of a chain of these operations is
  read several times, and XLA fuses such a chain into each of its consumers
  (each output, each slice taken of it), so the program grows with the chain
  times its consumers. A loop body is compiled once and its outputs are
  materialised (an optimisation barrier is not: XLA:CPU removes it before
  fusion). Returns ``fn``'s outputs (a pytree of (P,) vectors).
  """
  n = vectors[0].shape[0]
  pad = (-n) % chunks
  xs = [jnp.pad(v, (0, pad)).reshape(chunks, -1) for v in vectors]
  _, ys = jax.lax.scan(lambda carry, x: (carry, fn(*x)), None, xs)
  return jax.tree.map(lambda y: y.reshape(-1)[:n], ys)
