"""Progress over communication rounds, showing the latest metrics.

On a terminal this is a tqdm bar on stderr. When stderr is not a terminal (CI
logs, ``> log 2>&1``) it prints one plain line every ~10% of the rounds,
``desc: round r/T  key=value ...  [12.3s]``, so logs stay readable without
carriage-return spam.
"""

from __future__ import annotations

import math
import numbers
import sys
import time
from typing import Any, Iterable, Iterator, Mapping, TextIO

import numpy as np


def format_value(value: Any) -> str:
  """A compact string for a metric: 4 significant digits for floats; NaN stays visible."""
  if isinstance(value, str):
    return value
  if isinstance(value, (bool, np.bool_)):
    return str(bool(value))
  if isinstance(value, numbers.Number) or hasattr(value, '__array__'):
    array = np.asarray(value)
    if array.size == 1 and array.dtype.kind in 'biuf':
      item = array.item()
      return f'{item:.4g}' if isinstance(item, float) else str(item)
  return str(value)


def format_postfix(values: Mapping[str, Any]) -> str:
  """``key=value`` pairs separated by two spaces."""
  return '  '.join(f'{key}={format_value(value)}' for key, value in values.items())


class Progress:
  """Counts rounds; subclasses decide how progress is shown.

  Iterating over it yields the wrapped iterable and counts an item after the
  loop body ran, so ``set_postfix`` inside the body describes that round.
  With explicit counting, call ``set_postfix`` before ``update`` for a round.

  Attributes:
    total: the number of rounds, or None when unknown.
    n: rounds done so far.
  """

  def __init__(self, iterable: Iterable | None, total: int | None):
    self.iterable = iterable
    self.total = total
    self.n = 0
    self.postfix: dict[str, str] = {}
    self.closed = False

  def __iter__(self) -> Iterator:
    if self.iterable is None:
      raise TypeError('progress(total, ...) counts with update(); pass an iterable to iterate')
    try:
      for item in self.iterable:
        yield item
        self.update()
    finally:
      self.close()

  def update(self, n: int = 1) -> None:
    """Marks `n` more rounds done."""
    self.n += n
    self._shown_update(n)

  def set_postfix(self, values: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
    """Replaces the metrics shown next to the count (numpy/jax scalars accepted)."""
    self.postfix = {key: format_value(value) for key, value in {**(values or {}), **kwargs}.items()}
    self._shown_postfix()

  def close(self) -> None:
    """Finishes the display; safe to call twice."""
    if not self.closed:
      self.closed = True
      self._shown_close()

  def __enter__(self) -> Progress:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def _shown_update(self, n: int) -> None:
    del n

  def _shown_postfix(self) -> None:
    pass

  def _shown_close(self) -> None:
    pass


class BarProgress(Progress):
  """A tqdm bar on a terminal stream."""

  def __init__(self, iterable, total, desc: str, stream: TextIO, unit: str):
    super().__init__(iterable, total)
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    self._bar = tqdm(total=total, desc=desc, file=stream, unit=unit, dynamic_ncols=True)

  def _shown_update(self, n: int) -> None:
    self._bar.update(n)

  def _shown_postfix(self) -> None:
    self._bar.set_postfix_str(format_postfix(self.postfix))

  def _shown_close(self) -> None:
    self._bar.close()


class LogProgress(Progress):
  """Plain lines every `log_fraction` of the total (every 10 rounds if unknown)."""

  def __init__(self, iterable, total, desc: str, stream: TextIO, unit: str,
               log_fraction: float = 0.1):
    super().__init__(iterable, total)
    self.desc, self.stream, self.unit = desc, stream, unit
    self.every = max(1, math.ceil(total * log_fraction)) if total else 10
    self._logged = 0
    self._start = time.perf_counter()

  def line(self) -> str:
    """The status line for the current round."""
    count = f'{self.n}/{self.total}' if self.total else str(self.n)
    parts = [f'{self.desc}: {self.unit} {count}']
    if self.postfix:
      parts.append(format_postfix(self.postfix))
    parts.append(f'[{time.perf_counter() - self._start:.1f}s]')
    return '  '.join(parts)

  def _log(self) -> None:
    self._logged = self.n
    print(self.line(), file=self.stream, flush=True)

  def _shown_update(self, n: int) -> None:
    crossed = self.n // self.every > self._logged // self.every
    finished = self.total is not None and self.n >= self.total
    if (crossed or finished) and self.n != self._logged:
      self._log()

  def _shown_close(self) -> None:
    if self.n != self._logged:  # stopped between log points: say where.
      self._log()


def _is_terminal(stream: TextIO) -> bool:
  try:
    return bool(stream.isatty())
  except (AttributeError, ValueError):  # no isatty, or a closed stream.
    return False


def progress(
    iterable_or_total: Iterable | int,
    desc: str,
    enabled: bool = True,
    *,
    unit: str = 'round',
    stream: TextIO | None = None,
    log_fraction: float = 0.1,
) -> Progress:
  """Progress display over communication rounds with the latest metrics.

  Args:
    iterable_or_total: the rounds to iterate over, or their number (then count
      with ``update``).
    desc: label, e.g. the method's name.
    enabled: False gives a silent object with the same methods.
    unit: what is counted, shown in log lines and the bar.
    stream: where to write; default ``sys.stderr`` at call time.
    log_fraction: without a terminal, print a line every this fraction of the
      total.

  Returns:
    A `Progress` with ``update(n=1)``, ``set_postfix(dict)``, ``close()``;
    iterable when given an iterable; a context manager.
  """
  if isinstance(iterable_or_total, numbers.Integral):
    iterable, total = None, int(iterable_or_total)
  else:
    iterable = iterable_or_total
    total = len(iterable) if hasattr(iterable, '__len__') else None
  if not enabled:
    return Progress(iterable, total)
  stream = sys.stderr if stream is None else stream
  if _is_terminal(stream):
    return BarProgress(iterable, total, desc, stream, unit)
  return LogProgress(iterable, total, desc, stream, unit, log_fraction)
