"""Per-round metrics as JSON lines (``metrics.jsonl``).

One JSON object per line, ``{"method": ..., "round": ..., **fields}``, flushed as
soon as it is written so that a crashed or interrupted run keeps every finished
round; the curves of the MetaGater paper's Fig. 4 are read back from it.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from mg.report.serialize import to_jsonable

METRICS_FILENAME = 'metrics.jsonl'


def metrics_path(path: str | os.PathLike) -> pathlib.Path:
  """The metrics file for `path`: itself if it ends in ``.jsonl``, else ``path/metrics.jsonl``."""
  path = pathlib.Path(path)
  return path if path.suffix == '.jsonl' else path / METRICS_FILENAME


def _parses(line: str) -> bool:
  try:
    json.loads(line)
  except json.JSONDecodeError:
    return False
  return True


def _repair_tail(path: pathlib.Path) -> None:
  """Ends a file left by an interrupted write on a line boundary.

  A last line without its newline is kept (newline added) when it is a complete
  JSON object, and cut off when it is a fragment, so that appended records
  always start on a line of their own.
  """
  if not path.exists() or path.stat().st_size == 0:
    return
  data = path.read_bytes()
  if data.endswith(b'\n'):
    return
  cut = data.rfind(b'\n') + 1
  tail = data[cut:].decode('utf-8', errors='replace')
  with open(path, 'r+b') as file:
    if _parses(tail):
      file.seek(0, os.SEEK_END)
      file.write(b'\n')
    else:
      file.truncate(cut)


class MetricsLog:
  """Appends one JSON object per line to ``metrics.jsonl``.

  Usable as a context manager::

    with MetricsLog(workdir) as log:
      log.write('metagater', 10, accuracy_mean=acc, loss=loss)

  Attributes:
    path: the ``.jsonl`` file written to.
  """

  def __init__(self, path: str | os.PathLike):
    """Opens the log for appending.

    Args:
      path: a folder (the log is ``path/metrics.jsonl``) or a ``.jsonl`` file.
        Missing folders are created; an existing log is appended to.
    """
    self.path = metrics_path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    _repair_tail(self.path)
    self._file = open(self.path, 'a', encoding='utf-8')

  # `round` shadows the builtin: the name is part of the interface.
  def write(self, method: str, round: int, **fields: Any) -> dict:  # pylint: disable=W0622
    """Appends ``{"method", "round", **fields}`` as one line and flushes it.

    Args:
      method: the method's name (e.g. ``'metagater'``).
      round: the communication round the fields describe.
      **fields: metrics; numpy/jax scalars and arrays become floats/lists and
        non-finite values ``null``.

    Returns:
      The record as written (plain JSON types).
    """
    if self._file is None:
      raise ValueError(f'MetricsLog({self.path}) is closed; open a new one to write')
    record = {'method': str(method), 'round': int(round)}
    record.update(to_jsonable(fields))
    self._file.write(json.dumps(record, allow_nan=False) + '\n')
    self._file.flush()
    return record

  def close(self) -> None:
    """Closes the file; further writes raise ValueError. Safe to call twice."""
    if self._file is not None:
      self._file.close()
      self._file = None

  def __enter__(self) -> MetricsLog:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def read_metrics(path: str | os.PathLike, method: str | None = None) -> list[dict]:
  """Reads the records of a metrics log, in write order.

  A last line cut off by a crash is ignored; a malformed line anywhere else is
  an error.

  Args:
    path: a folder holding ``metrics.jsonl`` or the ``.jsonl`` file itself.
    method: if given, only this method's records.

  Returns:
    The records as dicts.

  Raises:
    FileNotFoundError: when there is no log at `path`.
    ValueError: for a malformed line that is not the last one.
  """
  file = metrics_path(path)
  lines = file.read_text(encoding='utf-8').split('\n')
  complete, tail = lines[:-1], lines[-1]
  records = []
  for number, line in enumerate(complete, start=1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as error:
      raise ValueError(f'{file}:{number}: not a JSON object ({error})') from error
  if tail.strip() and _parses(tail):
    records.append(json.loads(tail))
  if method is not None:
    records = [record for record in records if record.get('method') == method]
  return records
