"""Process-wide backend set-up: XLA:CPU options and multi-host start-up.

Both act only before JAX starts its backends (the first device query or
computation), so an entry point calls ``configure`` first thing.

XLA:CPU options (measured with ``python -m experiments.bench``; README
"Speed"): by default XLA:CPU hands convolutions, dots *and* elementwise and
reduction fusions to its YNNPACK library. For the MetaGater networks the
elementwise/reduction part is slower than XLA's own fused loops (the ReLU,
gate and max-pool backward passes): keeping YNNPACK for convolutions and dots
only ran a CNN-4 training step ~1.3x faster (CIFAR-10 shapes, batch 64, 2
cores: 1,131 -> 1,469 images/s, medians of 5 alternating processes); no
change for the MLP. Tried without a gain: oneDNN (``xla_cpu_use_onednn``,
its convolution fusion: slower) and XNNPACK graph fusion.
"""

from __future__ import annotations

import os
import warnings

from mg.federated.sharding import initialize_distributed  # noqa: F401 (re-export)

# Flag -> value; each is only added when XLA_FLAGS does not set that flag already.
CPU_FLAGS = {
    'xla_cpu_experimental_ynn_fusion_type': 'individual_dot,individual_convolution',
}


def _backends_started() -> bool:
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return False


def cpu_flags(existing: str = '') -> str:
  """``existing`` XLA_FLAGS plus every ``CPU_FLAGS`` entry it does not set."""
  flags = existing.split()
  for name, value in CPU_FLAGS.items():
    if not any(f.lstrip('-').split('=')[0] == name for f in flags):
      flags.append(f'--{name}={value}')
  return ' '.join(flags)


def configure(distributed=None, *, tune_cpu: bool = True) -> None:
  """Sets the XLA:CPU options and joins a multi-host run when configured.

  Args:
    distributed: ``config.distributed`` (see ``initialize_distributed``) or None.
    tune_cpu: add ``CPU_FLAGS`` to ``XLA_FLAGS`` (a user's own setting of the
      same flag wins).
  """
  if tune_cpu:
    wanted = cpu_flags(os.environ.get('XLA_FLAGS', ''))
    if wanted != os.environ.get('XLA_FLAGS', '').strip():
      if _backends_started():
        warnings.warn('XLA:CPU options not applied: JAX started its backends before '
                      'mg.federated.backend.configure() was called', stacklevel=2)
      else:
        os.environ['XLA_FLAGS'] = wanted
  initialize_distributed(distributed)
