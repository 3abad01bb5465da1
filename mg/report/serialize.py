"""Strict-JSON conversion and atomic writes for run reports.

Reports are written at the end of long federated runs (the MetaGater paper's
Tables 1-2 and Fig. 4), so neither a NaN from a diverged method nor a crash in
the middle of a write may leave an invalid or half-written file: values are
converted to plain JSON types (non-finite floats become ``null``) and files are
replaced atomically.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import pathlib
import tempfile
from typing import Any

import numpy as np


def to_jsonable(value: Any) -> Any:
  """Converts `value` to plain JSON types, recursively.

  numpy and jax scalars become Python ``bool``/``int``/``float``, arrays become
  nested lists, tuples become lists, paths become strings, and non-finite
  floats (NaN, +-inf) become ``None`` so that ``json.dumps(..., allow_nan=False)``
  always succeeds.

  Args:
    value: a scalar, array, or nested dict/list/tuple of them.

  Returns:
    The same data built from ``dict``, ``list``, ``str``, ``int``, ``float``,
    ``bool`` and ``None`` only.

  Raises:
    TypeError: for an object with no JSON meaning (e.g. a complex number).
  """
  if value is None or isinstance(value, (str, bool)):
    return value
  if isinstance(value, np.bool_):
    return bool(value)
  if isinstance(value, numbers.Integral):
    return int(value)
  if isinstance(value, numbers.Real):
    number = float(value)
    return number if math.isfinite(number) else None
  if isinstance(value, dict):
    return {str(key): to_jsonable(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(item) for item in value]
  if isinstance(value, pathlib.PurePath):
    return str(value)
  if hasattr(value, '__array__'):  # numpy arrays, jax arrays and scalars.
    array = np.asarray(value)
    if array.dtype.kind == 'V':  # ml_dtypes such as bfloat16.
      array = array.astype(np.float64)
    if array.dtype.kind not in 'biuf':
      raise TypeError(f'cannot write an array of dtype {array.dtype} as JSON')
    return to_jsonable(array.item() if array.ndim == 0 else array.tolist())
  raise TypeError(
      f'cannot write {type(value).__name__} as JSON: convert it to a number, '
      'string, list or dict first')


def is_finite_number(value: Any) -> bool:
  """True when `value` is a real scalar (Python, numpy or jax) that is finite."""
  if value is None or isinstance(value, (str, bool, np.bool_)):
    return False
  try:
    return math.isfinite(float(value))
  except (TypeError, ValueError):
    return False


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> pathlib.Path:
  """Writes `data` to `path` via a temporary file in the same folder + os.replace.

  A reader never sees a partial file: either the old content or the new one.

  Args:
    path: destination file; missing parent folders are created.
    data: the complete file content.

  Returns:
    `path` as a ``pathlib.Path``.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as file:
      file.write(data)
      file.flush()
      os.fsync(file.fileno())
    os.chmod(temp, 0o644)  # mkstemp creates 0600; reports are meant to be shared.
    os.replace(temp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(temp)
    raise
  return path


def atomic_write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
  """`atomic_write_bytes` for UTF-8 text."""
  return atomic_write_bytes(path, text.encode('utf-8'))
