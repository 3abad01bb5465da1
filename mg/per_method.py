"""A method's own settings: ``per_method.<method>.<key>`` when set, else a shared field.

Both families' entry layers resolve their methods' settings this way
(``mg.metagater.methods`` for MetaGater and its baselines, ``mg.reefl.methods`` for ReeFL
and its baselines), so every method can run at its own tuned settings while
an unset one follows the shared value.
"""

from __future__ import annotations


def field(config, path: str):
  """The value at a dotted ``path`` of ``config``."""
  value = config
  for part in path.split('.'):
    value = value[part]
  return value


def resolve(method: str, shared: dict, config) -> dict:
  """``{key: float}``: ``per_method.<method>.<key>`` if set, else ``config``'s ``shared[key]``."""
  own = config.get('per_method', {}).get(method, {})
  out = {}
  for key, path in shared.items():
    value = own.get(key) if hasattr(own, 'get') else None
    out[key] = float(field(config, path) if value is None else value)
  return out
