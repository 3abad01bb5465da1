"""The one run harness: what every run and sweep of either system does with its workdir.

::

  with Session(config, workdir, kind='run', outputs=OUTPUTS) as session:
    data = load(...)              # anything that can fail on bad input, first
    session.accept()              # config.json; a fresh start if resume=False
    continue_from(session.restored)
    ... session.log.write(method, round, ...) ...
    session.save(arrays, progress, where='round 10 of ...')
    if session.stop: raise Interrupted(...)

Entering holds the workdir (``mg.harness.workdir.Lock``), turns SIGINT/SIGTERM
into ``session.stop`` (``mg.harness.checkpoint.StopRequest``), checks that the
workdir's entries are of the right kind and, with ``config.resume``, that its
config of record (``mg.harness.record``) is this one's, field by field. It
changes nothing in the workdir: a refused command leaves it as it was.

``accept()`` is called once the work can start (its data loaded, its inputs
read): with ``resume=False`` it deletes the checkpoints and ``outputs``; it
writes ``config.json`` and rewrites ``metrics.jsonl`` to exactly the records
of the checkpoint it resumes from (none without one), so a kill at any point
never leaves a round logged twice. ``save`` writes a checkpoint holding the
caller's arrays and progress, the log's text and the record.
"""

from __future__ import annotations

import os
from typing import Optional

from mg.harness import checkpoint as ckpt_lib
from mg.harness import record as record_lib
from mg.harness import workdir as workdir_lib
from mg.report import MetricsLog


class Session:
  """A run or sweep holding its workdir (a context manager).

  Attributes:
    config, workdir, kind: as given.
    record: the config of record this work writes.
    restored: the checkpoint to continue from (``mg.harness.checkpoint.Restored``)
      or None (a fresh start).
    stop: the ``StopRequest``; true once SIGINT/SIGTERM arrived.
    log: the ``MetricsLog`` (after ``accept``).
    store: the checkpoint ``Store`` (after ``accept``).
  """

  def __init__(self, config, workdir: str, *, kind: str, outputs=()):
    self.config, self.workdir, self.kind = config, workdir, kind
    self.outputs = tuple(outputs)
    self.record = record_lib.of(config, kind)
    self.restored: Optional[ckpt_lib.Restored] = None
    self.log: Optional[MetricsLog] = None
    self.store: Optional[ckpt_lib.Store] = None
    self._lock = workdir_lib.Lock(workdir)
    self.stop = ckpt_lib.StopRequest()

  def __enter__(self) -> Session:
    self._lock.__enter__()
    try:
      self.stop.__enter__()
      workdir_lib.check_layout(self.workdir, self.outputs)
      if self.config.resume:
        self.restored = workdir_lib.restore(self.workdir, self.config.keep_checkpoints)
        saved = workdir_lib.config_of_record(self.workdir, self.restored)
        if saved is not None:
          record_lib.check_same(self.workdir, saved, self.record)
    except BaseException:
      self.__exit__(None, None, None)
      raise
    return self

  def accept(self) -> None:
    """The work starts here: outputs cleared (``resume=False``), config and log set."""
    if not self.config.resume:
      workdir_lib.clear(self.workdir, self.outputs)
    workdir_lib.write_config(self.workdir, record_lib.text(self.record))
    workdir_lib.restore_log(self.workdir,
                            None if self.restored is None else self.restored.progress)
    self.store = ckpt_lib.Store(os.path.join(self.workdir, ckpt_lib.CHECKPOINT_DIR),
                                self.config.keep_checkpoints)
    self.log = MetricsLog(os.path.join(self.workdir, workdir_lib.LOG_FILE))
    if self.restored is not None:
      print(f"resuming from checkpoint {self.restored.step}: "
            f"{self.restored.progress.get('where', '')} ({self.store.directory})", flush=True)

  @property
  def resumes(self) -> list:
    """One line per resume so far, this one last (``results.json`` lists them)."""
    if self.restored is None:
      return []
    p = self.restored.progress
    return list(p.get('resumes', [])) + [f"checkpoint {self.restored.step}: {p.get('where', '')}"]

  def save(self, arrays: dict, progress: dict, where: str) -> int:
    """Writes a checkpoint of ``arrays`` and ``progress`` at ``where``; returns its step."""
    log_text = self.log.path.read_text(encoding='utf-8')
    progress = dict(progress, where=where, log=log_text, log_bytes=len(log_text.encode()),
                    resumes=self.resumes, config=self.record)
    return self.store.save(arrays, progress)

  def __exit__(self, *exc_info):
    if self.log is not None:
      self.log.close()
    if self.store is not None:
      self.store.close()
    self.stop.__exit__(*exc_info)
    self._lock.__exit__(*exc_info)
