"""Boolean pytree masks over ``{'theta', 'phi'}`` built from parameter paths.

Optimisers and prox operators target a part of the parameters through these
masks (e.g. the group lasso touches the gate output groups only, docs/design.md
s.2-3). Every leaf must match exactly one rule; a leaf that matches none
raises, so a new parameter can never silently fall outside every mask.

Rules (``*`` is any layer name):
  * ``theta/*/{kernel,bias}``                      backbone
  * ``phi/*/hidden/{kernel,bias}``                 gate hidden layer
  * ``phi/*/out/{kernel,bias}``                    gate output (lasso groups)

A leading batch axis on the leaves (stacked clients) does not matter: only
paths are read. The paths are those of the ``flax.linen`` modules' own tree
(``mg.models.Network``: submodules ``theta`` and ``phi``, each layer named
after itself, ``nn.Conv`` / ``nn.Dense`` leaves ``kernel`` and ``bias``).
"""

from __future__ import annotations

from typing import Any

import jax

BACKBONE = 'backbone'
GATE_HIDDEN = 'gate_hidden'
GATE_OUT = 'gate_out'
_WEIGHTS = ('kernel', 'bias')


def _key_name(entry) -> Any:
  for attr in ('key', 'name', 'idx'):
    if hasattr(entry, attr):
      return getattr(entry, attr)
  return entry


def leaf_role(path) -> str:
  """``BACKBONE``, ``GATE_HIDDEN`` or ``GATE_OUT`` for a parameter path.

  Raises:
    ValueError: the path matches no rule of the module docstring.
  """
  keys = tuple(_key_name(entry) for entry in path)
  if len(keys) == 3 and keys[0] == 'theta' and keys[2] in _WEIGHTS:
    return BACKBONE
  if len(keys) == 4 and keys[0] == 'phi' and keys[3] in _WEIGHTS:
    if keys[2] == 'hidden':
      return GATE_HIDDEN
    if keys[2] == 'out':
      return GATE_OUT
  raise ValueError(
      f'Parameter {jax.tree_util.keystr(path)} matches no mask rule; expected '
      "theta/<layer>/{kernel,bias} or phi/<layer>/{hidden,out}/{kernel,bias}.")


def _mask(params, roles: tuple[str, ...]):
  return jax.tree_util.tree_map_with_path(
      lambda path, _: leaf_role(path) in roles, params)


def gating_mask(params):
  """True on every ``phi`` leaf (the gating module)."""
  return _mask(params, (GATE_HIDDEN, GATE_OUT))


def backbone_mask(params):
  """True on every ``theta`` leaf (the backbone)."""
  return _mask(params, (BACKBONE,))


def gate_output_mask(params):
  """True on ``phi/*/out/*`` only: the group-lasso groups of docs/design.md s.2.

  Group ``c`` of a gated layer is ``out.kernel[:, c]`` with ``out.bias[c]``,
  one index of the trailing axis, as ``mg.prox.group_lasso`` expects.
  """
  return _mask(params, (GATE_OUT,))
