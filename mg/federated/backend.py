"""Process-wide backend set-up: XLA:CPU options, compile cache, multi-host start-up.

All act only before JAX starts its backends (the first device query or
computation), so an entry point calls ``configure`` first thing.

Compile cache (``config.compile_cache_dir``): JAX's persistent compilation
cache (``jax_compilation_cache_dir``), so a rerun of a config loads its
programs instead of compiling them. Every program is cached whatever its
compile time (``jax_persistent_cache_min_compile_time_secs = 0``): the many
small programs of a run (adaptation, evaluation, the loop round's pieces) add
up. A ``JAX_COMPILATION_CACHE_DIR`` in the environment wins. ``CompileClock``
sums the compile time JAX reports (tracing, lowering, backend compile or cache
load), the figure ``experiments.main`` prints at the end of a run.

XLA:CPU options (measured with ``python -m experiments.bench``;
docs/speed.md): by default XLA:CPU hands convolutions, dots and elementwise and
reduction fusions to its YNNPACK library. For the networks here XLA's own
kernels are faster, so YNNPACK is turned off (an empty fusion-type list).
CNN-4 at CIFAR-10 shapes (20 tasks, batch 64, the ``loop`` round; one process
per setting, the 2-core CPU otherwise idle; ``vs torch``: the 1-thread
PyTorch reference timed in alternation in the same process):

  fusion types handed to YNNPACK      K=1 images/s  K=5 images/s  vs torch
  (none: the default here)             1,512-1,732   1,319-1,326   1.66-2.10
  individual_dot                       1,306-1,464   1,460         1.72-1.83
  individual_dot,individual_convolution 1,007-1,077  861-965       1.10-1.26

Per convolution (batch 64, fwd + both gradients): 16x16 32->64 channels 50 ms
with YNNPACK, 10.6 ms with XLA's own (PyTorch, 1 thread: 31 ms). The MLP
(MNIST, 5 tasks, K = 5: 58-72k images/s under each setting) does not change
measurably. The ReeFL ViT does, the other way: a round of 10 clients of
``configs/reefl/mnist.py`` ran at 1,146 images/s with XLA's default (YNNPACK
on) and 858 with it off (1,331 vs 1,034 for the code before its blocks were
scanned), so ReeFL runs with the default (``mg.systems.CPU_OPTIONS``;
docs/speed.md, "ReeFL rounds"). Earlier,
against the default of YNNPACK for everything, keeping it for convolutions and
dots only had run a step 1.3x faster (1,131 -> 1,469 images/s): every part
handed to YNNPACK was the slower one. Also tried without a gain: oneDNN
(``xla_cpu_use_onednn``: 18.3 ms for the convolution above), XNNPACK graph
fusion, and two independent accumulator chains in the ``loop`` round so that
two tasks' programs could overlap (1,008 vs 959 images/s at K = 1, 985 vs
1,033 at K = 5: XLA already uses both cores).
"""

from __future__ import annotations

import collections
import os
import warnings

from mg.federated.sharding import initialize_distributed  # noqa: F401 (re-export)

# Flag -> value; each is only added when XLA_FLAGS does not set that flag already.
# The default set; a system may give its own (``mg.systems.cpu_options``).
CPU_FLAGS = {
    'xla_cpu_experimental_ynn_fusion_type': '',   # YNNPACK off (module docstring)
}


def _backends_started() -> bool:
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return False


def cpu_flags(existing: str = '', options: dict | None = None) -> str:
  """``existing`` XLA_FLAGS plus every ``options`` entry (default ``CPU_FLAGS``) it does not set."""
  flags = existing.split()
  for name, value in (CPU_FLAGS if options is None else options).items():
    if not any(f.lstrip('-').split('=')[0] == name for f in flags):
      flags.append(f'--{name}={value}')
  return ' '.join(flags)


def compile_cache(directory) -> str:
  """Turns on JAX's persistent compilation cache in ``directory`` ('' or None: off).

  Returns the directory in use ('' when off); ``JAX_COMPILATION_CACHE_DIR`` in
  the environment wins over ``directory``.
  """
  import jax  # pylint: disable=g-import-not-at-top
  directory = os.environ.get('JAX_COMPILATION_CACHE_DIR') or directory
  if not directory:
    return ''
  directory = os.path.expanduser(directory)
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  return directory


# JAX's events for the stages of making a program (jax._src.dispatch).
COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration',
                  '/jax/core/compile/jaxpr_to_mlir_module_duration',
                  '/jax/core/compile/backend_compile_duration')


class CompileClock:
  """Seconds JAX spends making programs while active (a context manager).

  ``seconds`` sums ``COMPILE_EVENTS`` (tracing, lowering, and compiling or
  loading from the persistent cache); ``by_event`` splits it.
  """

  def __init__(self):
    self.by_event = collections.Counter()
    self._active = False

  def _listen(self, event: str, duration: float, **_):
    if self._active and event in COMPILE_EVENTS:
      self.by_event[event] += duration

  @property
  def seconds(self) -> float:
    return float(sum(self.by_event.values()))

  def __enter__(self):
    from jax import monitoring  # pylint: disable=g-import-not-at-top
    self._active = True
    monitoring.register_event_duration_secs_listener(self._listen)
    return self

  def __exit__(self, *exc):
    from jax._src import monitoring  # pylint: disable=g-import-not-at-top
    self._active = False
    try:
      monitoring.unregister_event_duration_listener(self._listen)
    except (AttributeError, AssertionError, ValueError):
      pass  # an older JAX: the listener stays, inactive
    return False


def configure(distributed=None, *, tune_cpu: bool = True, cpu_options: dict | None = None,
              compile_cache_dir=None) -> None:
  """Sets the XLA:CPU options and compile cache; joins a multi-host run when configured.

  Args:
    distributed: ``config.distributed`` (see ``initialize_distributed``) or None.
    tune_cpu: add ``cpu_options`` (default ``CPU_FLAGS``) to ``XLA_FLAGS`` (a
      user's own setting of the same flag wins).
    cpu_options: flag -> value, the system's own (``mg.systems.cpu_options``).
    compile_cache_dir: ``config.compile_cache_dir`` (see ``compile_cache``).
  """
  if tune_cpu:
    wanted = cpu_flags(os.environ.get('XLA_FLAGS', ''), cpu_options)
    if wanted != os.environ.get('XLA_FLAGS', '').strip():
      if _backends_started():
        warnings.warn('XLA:CPU options not applied: JAX started its backends before '
                      'mg.federated.backend.configure() was called', stacklevel=2)
      else:
        os.environ['XLA_FLAGS'] = wanted
  compile_cache(compile_cache_dir)
  initialize_distributed(distributed)
