"""Checkpoints of a long run, and stopping cleanly on SIGINT or SIGTERM.

A meta-training run of hundreds of rounds (MetaGater paper, s.5; Algorithm 1
iterated ``T`` times) on a shared or preemptible machine must not lose its
work, and must never report a result that a fault corrupted. This module holds
the pieces that make a run survive, independent of what is being trained:

* ``Store``: numbered checkpoints with orbax-checkpoint under
  ``<workdir>/checkpoints/<step>/``, each holding two items:

  - ``arrays``: a pytree of numpy arrays (server states, optimizer states,
    PRNG key data, kept output models), saved by ``ocp.args.PyTreeSave``;
  - ``progress``: a JSON document (where the run is, the metrics so far and a
    SHA-256 digest of ``arrays``), saved by ``ocp.args.JsonSave``.

  Orbax writes a step into a temporary folder and renames it when complete,
  so a crash during a save leaves the previous steps usable; the newest
  ``keep`` steps are kept. ``restore_latest`` falls back to an older step
  when the newest cannot be read or its digest does not match.
* ``host_leaves`` / ``restore_like``: a pytree to a list of numpy arrays and
  back, onto a template of the live tree, so a restored state has exactly the
  shapes, dtypes (no weak types) and devices of a fresh one and the compiled
  round is the same program after a resume (bit-for-bit results on CPU).
  Typed PRNG keys are saved as ``jax.random.key_data`` and restored with
  ``jax.random.wrap_key_data``.
* ``StopRequest``: turns SIGINT/SIGTERM into a flag that the training loop
  reads at a round boundary, so the run saves a checkpoint and exits cleanly
  instead of dying mid-round.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import signal
import sys
import threading
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

CHECKPOINT_DIR = 'checkpoints'


class CheckpointError(Exception):
  """A checkpoint that cannot be used; the message says which and why."""


class Restored(NamedTuple):
  """A checkpoint read back: its step, its arrays (numpy) and its progress."""
  step: int
  arrays: dict
  progress: dict


def _is_key(x) -> bool:
  return hasattr(x, 'dtype') and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def host_leaves(tree) -> list:
  """The leaves of ``tree`` as numpy arrays (typed PRNG keys as their key data)."""
  return [np.asarray(jax.device_get(jax.random.key_data(x) if _is_key(x) else x))
          for x in jax.tree.leaves(tree)]


def restore_like(template, leaves: list, what: str = 'tree'):
  """``leaves`` (from ``host_leaves``) put back into the structure of ``template``.

  Each array must have the shape and dtype of the matching template leaf; it
  is placed like the template leaf (committed to its sharding, or uncommitted
  on the default device), so the restored tree is indistinguishable from the
  live one to ``jax.jit`` (same avals, no weak types, same placement: no new
  compilation, the same compiled program).

  Args:
    template: a pytree like the one saved (e.g. a freshly initialised state).
    leaves: its leaves as saved, in ``jax.tree.leaves`` order.
    what: a name for error messages.

  Returns:
    The restored pytree.

  Raises:
    CheckpointError: a different number of leaves, or a shape/dtype mismatch.
  """
  template_leaves, treedef = jax.tree.flatten(template)
  if len(template_leaves) != len(leaves):
    raise CheckpointError(f'{what}: the checkpoint has {len(leaves)} arrays where '
                          f'{len(template_leaves)} are expected')
  out = []
  for i, (like, saved) in enumerate(zip(template_leaves, leaves)):
    saved = np.asarray(saved)
    if _is_key(like):
      key = jax.random.wrap_key_data(saved, impl=jax.random.key_impl(like))
      if key.shape != like.shape:
        raise CheckpointError(f'{what}: key {i} has shape {key.shape}, expected {like.shape}')
      out.append(key)
      continue
    like_dtype = np.dtype(like.dtype)
    if saved.shape != tuple(like.shape) or saved.dtype != like_dtype:
      raise CheckpointError(
          f'{what}: array {i} is {saved.dtype}{list(saved.shape)} in the checkpoint, '
          f'expected {like_dtype}{list(like.shape)}')
    if not isinstance(like, jax.Array):
      out.append(saved)
    elif like.committed:
      out.append(jax.device_put(saved, like.sharding))
    else:  # as a jitted round returns it: uncommitted, on the default device.
      out.append(jnp.asarray(saved))
  return jax.tree.unflatten(treedef, out)


def digest(tree) -> str:
  """SHA-256 over every leaf's path, dtype, shape and bytes (numpy leaves)."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    leaf = np.ascontiguousarray(np.asarray(leaf))
    h.update(jax.tree_util.keystr(path).encode())
    h.update(f'{leaf.dtype.str}{leaf.shape}'.encode())
    h.update(leaf.tobytes())
  return h.hexdigest()


class Store:
  """Numbered, atomically written checkpoints in one folder (orbax-checkpoint).

  Steps are save sequence numbers (1, 2, ...): what a step holds is described
  by its ``progress`` document, so a run may save at any point (every few
  rounds, at the end of a method, on an interrupt).
  """

  def __init__(self, directory: str, keep: int):
    """Opens (creating) ``directory``; the newest ``keep`` steps are kept."""
    self.directory = os.path.abspath(directory)
    # cleanup_tmp_directories: a save cut short by a crash leaves a temporary
    # folder that was never renamed into a step; it is removed on the next start.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=False,
        cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(
        self.directory, item_names=('arrays', 'progress'), options=options)

  def steps(self) -> list:
    """The completed steps, oldest first (unfinished saves are not listed)."""
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def save(self, arrays: dict, progress: dict) -> int:
    """Writes a new step; returns its number.

    Args:
      arrays: a non-empty nested dict/list of numpy arrays.
      progress: a JSON-able dict (a ``digest`` of ``arrays`` is added).
    """
    steps = self.steps()
    step = (steps[-1] + 1) if steps else 1
    # 0-d arrays, not numpy scalars: orbax would store those as Python numbers.
    arrays = jax.tree.map(np.asarray, arrays)
    progress = dict(progress, digest=digest(arrays))
    try:
      with _OrbaxErrorsMuted():  # the failure is reported once, below
        self._manager.save(step, args=ocp.args.Composite(
            arrays=ocp.args.PyTreeSave(arrays), progress=ocp.args.JsonSave(progress)),
                           force=True)
        self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(_save_failed(self.directory, step, steps, e)) from e
    return step

  def restore(self, step: int) -> Restored:
    """Reads ``step``; raises ``CheckpointError`` if it is unreadable or altered."""
    try:
      items = self._manager.restore(step, args=ocp.args.Composite(
          arrays=ocp.args.PyTreeRestore(), progress=ocp.args.JsonRestore()))
      arrays, progress = items['arrays'], items['progress']
    except Exception as e:  # pylint: disable=broad-except
      _quiet_closed_event_loop()
      raise CheckpointError(f'checkpoint {step} is unreadable: '
                            f'{type(e).__name__}: {str(e)[:300]}') from e
    if not isinstance(progress, dict) or 'digest' not in progress:
      raise CheckpointError(f'checkpoint {step} has no valid progress record')
    arrays = jax.tree.map(np.asarray, arrays)
    if digest(arrays) != progress['digest']:
      raise CheckpointError(f'checkpoint {step} is corrupted: its arrays do not '
                            'match the digest saved with them')
    return Restored(step, arrays, progress)

  def restore_latest(self, log=print) -> Optional[Restored]:
    """The newest readable step, falling back to older ones; None if there is none."""
    for step in reversed(self.steps()):
      try:
        return self.restore(step)
      except CheckpointError as e:
        log(f'warning: {e}; falling back to the previous checkpoint')
    return None

  def close(self):
    self._manager.close()


class _OrbaxErrorsMuted(logging.Filter):
  """Drops orbax's own error logs (a traceback per failed save thread) while active."""

  def filter(self, record):
    return not (record.levelno >= logging.ERROR and 'orbax' in record.pathname)

  def __enter__(self):
    logging.getLogger('absl').addFilter(self)
    return self

  def __exit__(self, *exc_info):
    logging.getLogger('absl').removeFilter(self)


def _save_failed(directory: str, step: int, steps: list, err: Exception) -> str:
  """The one-line message of a save that failed (disk full, read-only, ...)."""
  chain, text = err, ''
  while chain is not None and not isinstance(chain, OSError):
    chain = chain.__cause__ or chain.__context__
  if isinstance(chain, OSError) and chain.errno == errno.ENOSPC:
    text = 'the disk is full'
  elif isinstance(chain, OSError):
    text = chain.strerror or str(chain)
  elif 'No space left on device' in str(err):
    text = 'the disk is full'
  else:
    text = f'{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ""}'
  last = (f'checkpoint {steps[-1]}, the last good one, stays usable: free space and rerun '
          'the same command to resume from it' if steps else 'there is no earlier '
          'checkpoint: free space and rerun the same command to start again')
  return f'could not write checkpoint {step} in {directory} ({text}); {last}'


def _quiet_closed_event_loop():
  """Drops the 'Event loop is closed' errors of an abandoned checkpoint read (and its futures' logs).

  When orbax gives up on an unreadable checkpoint, tensorstore still completes
  the reads it had started and their callbacks find orbax's event loop closed;
  Python would print each as an unraisable exception (harmless: nothing waits
  for them). Every other unraisable exception reaches the previous hook.
  """
  previous = sys.unraisablehook
  if getattr(previous, 'quiets_closed_event_loop', False):
    return

  def hook(unraisable):
    if _is_closed_loop(unraisable.exc_value):
      return
    previous(unraisable)

  hook.quiets_closed_event_loop = True
  sys.unraisablehook = hook
  # The abandoned reads' futures, tasks and callbacks also log it through asyncio's
  # logger ('Future/Task exception was never retrieved', 'Exception in callback'):
  # the same noise, dropped wherever the closed loop is the error.
  asyncio_log = logging.getLogger('asyncio')
  asyncio_log.addFilter(lambda record: not _closed_loop_record(record))


def _is_closed_loop(error) -> bool:
  return isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'


def _closed_loop_record(record: logging.LogRecord) -> bool:
  """Whether a log record reports (only) an event loop found closed."""
  if _is_closed_loop(record.exc_info[1] if record.exc_info else None):
    return True
  message = record.getMessage()
  return message.startswith(('Future exception was never retrieved',
                             'Task exception was never retrieved')) or (
                                 "RuntimeError('Event loop is closed')" in message)


class Interrupted(Exception):
  """The run stopped on a signal after saving a checkpoint.

  Attributes:
    signum: the signal received.
    where: where the run stopped, e.g. ``'round 4 of metagater (repeat 1)'``.
    exit_code: ``128 + signum`` (130 for SIGINT, 143 for SIGTERM), the shell's
      convention for a process ended by a signal.
  """

  def __init__(self, signum: int, where: str):
    super().__init__(f'interrupted by {signal.Signals(signum).name} at {where}')
    self.signum = signum
    self.where = where
    self.exit_code = 128 + signum


class StopRequest:
  """SIGINT/SIGTERM as a flag read at round boundaries (a context manager).

  The first signal only records itself (the handler writes a note to stderr
  with ``os.write``, which is safe inside a handler) and hands both signals
  back to the operating system's default action; the run saves a checkpoint
  after the current round and raises ``Interrupted``. A second signal
  therefore ends the process at once, wherever it is (inside a long native
  call, a checkpoint save or the final writing of results), without saving:
  the previous checkpoints stay usable, since saves are atomic.
  Outside the main thread, where handlers cannot be installed, it never fires.
  """

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.signum: Optional[int] = None
    self._previous = {}

  def __bool__(self) -> bool:
    return self.signum is not None

  def __enter__(self) -> StopRequest:
    if threading.current_thread() is threading.main_thread():
      for s in self.SIGNALS:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc_info):
    self._restore()

  def _restore(self):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    self.signum = signum
    # A Python handler runs only between bytecodes of the main thread; the
    # default action of a second signal acts at once.
    for s in self.SIGNALS:
      signal.signal(s, signal.SIG_DFL)
    os.write(2, (f'\n{name} received: saving a checkpoint at the end of the current '
                 f'round, then stopping (send {name} again to stop at once without '
                 'saving)\n').encode())


def json_roundtrip(value: Any) -> Any:
  """``value`` as it will read back from a JSON checkpoint record."""
  return json.loads(json.dumps(value))
