"""One run per workdir, and a workdir that every later command can still use.

A workdir holds one run: its ``config.json``, ``metrics.jsonl``, checkpoints
and results. This module keeps it usable whatever happens to a run:

* ``Lock``: an exclusive ``fcntl.flock`` on ``<workdir>/.lock`` held for the
  whole run. A second run in the same workdir stops at once with one line
  naming the holder's pid. The operating system releases the lock when the
  holder exits or is killed (even by SIGKILL), so a lock is never stale and
  there is nothing to clean up by hand.
* ``check_layout``: the workdir and the files a run writes there are of the
  right kind (a folder, not a file; ``config.json`` a file, ...), before any
  work starts.
* ``config_of_record``: the record (``mg.harness.record``) a workdir's work was
  started with: the one inside the newest readable checkpoint (what a resume
  continues), else ``config.json``. ``mg.harness.session`` compares a new
  command with it, and writes ``config.json`` only once the work is accepted.
* ``restore_log``: ``metrics.jsonl`` rewritten on resume to exactly the
  records of the checkpointed rounds (the checkpoint carries them).
* ``discard_unused``: a workdir that a refused command made, holding nothing
  but its lock file, is removed again, so a refusal leaves no trace.

Every problem is a ``WorkdirError`` whose message says what to do.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from typing import Optional

from mg.harness import checkpoint as ckpt_lib
from mg.report.serialize import atomic_write_text

LOCK_FILE = '.lock'
CONFIG_FILE = 'config.json'
LOG_FILE = 'metrics.jsonl'
# What each entry a run writes must be, if it exists: 'file' or 'folder'.
LAYOUT = {CONFIG_FILE: 'file', LOG_FILE: 'file', 'results.json': 'file',
          'results.md': 'file', ckpt_lib.CHECKPOINT_DIR: 'folder'}


class WorkdirError(Exception):
  """A workdir that this run cannot use; the message says why and what to do."""


def _reason(err: OSError) -> str:
  return err.strerror or type(err).__name__


def _file_above(path: str) -> str:
  """The first part of ``path`` that exists and is not a folder."""
  parts = os.path.abspath(path).split(os.sep)
  for i in range(2, len(parts) + 1):
    prefix = os.sep.join(parts[:i])
    if os.path.exists(prefix) and not os.path.isdir(prefix):
      return prefix
  return path


def make_folder(workdir: str) -> None:
  """Creates ``workdir`` (and its parents), or says why it cannot be one."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f'workdir {workdir} is a file, not a folder; give a folder (or a '
                       'path that does not exist yet) as --workdir')
  try:
    os.makedirs(workdir, exist_ok=True)
  except (NotADirectoryError, FileExistsError) as err:
    raise WorkdirError(f'workdir {workdir} cannot be created: {_file_above(workdir)} is '
                       'a file, not a folder; give another --workdir') from err
  except OSError as err:
    raise WorkdirError(f'workdir {workdir} cannot be created ({_reason(err)}); give a '
                       '--workdir on a writable disk') from err


class Lock:
  """The exclusive lock of a workdir, held while a run uses it (a context manager).

  Entering creates the workdir if needed, takes the lock without waiting and
  writes this process's pid into the lock file; leaving releases it. The lock
  file itself stays (removing it would let two runs lock two different files).
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd: Optional[int] = None

  def __enter__(self) -> Lock:
    make_folder(self.workdir)
    if os.path.isdir(self.path):
      raise WorkdirError(f'{self.path} is a folder where a run keeps its lock file; move it '
                         'away (or give another --workdir)')
    try:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
      raise WorkdirError(f'workdir {self.workdir} is not writable ({_reason(err)}); give '
                         'a --workdir on a writable disk') from err
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
      os.close(fd)
      if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
        raise WorkdirError(f'workdir {self.workdir} cannot be locked ({_reason(err)}); '
                           'give a --workdir on a local disk') from err
      raise WorkdirError(
          f'workdir {self.workdir} is in use by another run ({self._holder()}); wait for '
          'it to finish or stop it, or give another --workdir') from None
    os.ftruncate(fd, 0)
    os.write(fd, f'{os.getpid()}\n'.encode())
    self._fd = fd
    return self

  def _holder(self) -> str:
    try:
      with open(self.path) as f:
        pid = f.read().strip()
    except OSError:
      pid = ''
    return f'pid {pid}' if pid.isdigit() else 'pid unknown'

  def __exit__(self, *exc_info):
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None


def discard_unused(workdir: str) -> None:
  """Removes ``workdir`` if it holds nothing but its lock file (call it only for a
  workdir this command made, after the command was refused)."""
  try:
    if os.listdir(workdir) == [LOCK_FILE]:
      os.remove(os.path.join(workdir, LOCK_FILE))
      os.rmdir(workdir)
  except OSError:
    pass  # not ours to clean, or already gone: the refusal itself is what matters


def check_layout(workdir: str, outputs=()) -> None:
  """Raises ``WorkdirError`` when an entry a run writes has the wrong kind.

  ``outputs``: further files the run writes (its results and plots).
  """
  expected = dict(LAYOUT, **{name: 'file' for name in outputs})
  for name, kind in expected.items():
    path = os.path.join(workdir, name)
    if not os.path.lexists(path):
      continue
    if (kind == 'folder') != os.path.isdir(path):
      raise WorkdirError(
          f'{path} is a {"folder" if os.path.isdir(path) else "file"} where a run keeps '
          f'its {name} {kind}; move it away (or give another --workdir)')


def config_of_record(workdir: str, restored) -> Optional[dict]:
  """The record (``mg.harness.record``) that ``workdir``'s work was started with, or None.

  Args:
    workdir: the workdir.
    restored: its newest readable checkpoint (``mg.harness.checkpoint.Restored``) or None.

  Raises:
    WorkdirError: ``config.json`` is not a JSON object.
  """
  if restored is not None:
    return restored.progress['config']
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
    raise WorkdirError(f'{path} is not a readable config ({type(err).__name__}); move it '
                       'away, or pass --config.resume=False to start over in this '
                       'workdir') from err
  if not isinstance(saved, dict):
    raise WorkdirError(f'{path} is not a config (a JSON object); move it away, or pass '
                       '--config.resume=False to start over in this workdir')
  return saved


def restore(workdir: str, keep: int) -> Optional[ckpt_lib.Restored]:
  """The newest readable checkpoint of ``workdir``, or None (creates nothing)."""
  folder = os.path.join(workdir, ckpt_lib.CHECKPOINT_DIR)
  if not os.path.isdir(folder):
    return None
  store = ckpt_lib.Store(folder, keep)
  try:
    return store.restore_latest()
  finally:
    store.close()


def clear(workdir: str, outputs) -> None:
  """Deletes a previous run's checkpoints and ``outputs`` (a fresh start)."""
  shutil.rmtree(os.path.join(workdir, ckpt_lib.CHECKPOINT_DIR), ignore_errors=True)
  for name in outputs:
    if os.path.exists(os.path.join(workdir, name)):
      os.remove(os.path.join(workdir, name))


def write_config(workdir: str, text: str) -> None:
  """``config.json`` (``mg.harness.record.text``): written once the work is accepted."""
  atomic_write_text(os.path.join(workdir, CONFIG_FILE), text)


def restore_log(workdir: str, progress: Optional[dict]) -> None:
  """Makes ``metrics.jsonl`` hold exactly the records of a checkpoint's rounds.

  ``progress`` is the checkpoint's progress record (None: no checkpoint, the
  log starts empty). It carries the log's text at the save (``log``); a
  checkpoint written before the log was kept in it has only the log's length
  (``log_bytes``) and the log is cut back to that.
  """
  path = os.path.join(workdir, LOG_FILE)
  if progress is not None and 'log' in progress:
    atomic_write_text(path, progress['log'])
  elif progress is not None and os.path.exists(path):
    os.truncate(path, min(progress['log_bytes'], os.path.getsize(path)))
  elif os.path.exists(path):
    os.truncate(path, 0)
