"""Parameters by path: ``{'blocks/3/q/kernel': leaf}`` and back.

ReeFL's server aggregates, and its regimes select, parameters by path; the
pretrained readers map foreign names onto these paths.
"""

from __future__ import annotations

from typing import Any

import jax


def _key_str(entry) -> str:
  for attr in ('key', 'idx', 'name'):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def flatten(tree) -> dict[str, Any]:
  """``{'blocks/3/q/kernel': leaf, ...}``: parameters by path."""
  pairs, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {'/'.join(_key_str(k) for k in path): leaf for path, leaf in pairs}


def unflatten(flat: dict[str, Any], like) -> Any:
  """The tree of ``like``'s structure with leaves taken from ``flat`` by path."""
  pairs, treedef = jax.tree_util.tree_flatten_with_path(like)
  return jax.tree_util.tree_unflatten(
      treedef, [flat['/'.join(_key_str(k) for k in path)] for path, _ in pairs])
