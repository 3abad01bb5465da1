"""A batched sweep timed against its members run one after another, for either system.

``python -m experiments.sweep ... --bench`` runs both sides in one process, on
the same data, alternately (a shared machine's load drifts), and compares
their final accuracies; the first repetition includes compilation on both
sides, later ones reuse the compiled programs. Each system supplies the two
sides (``mg.metagater.sweep.bench``, ``mg.reefl.sweep``).
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Callable

import jax
import numpy as np


def machine() -> str:
  """The machine in words: processor, cores, backend and devices."""
  devices = jax.devices()
  return (f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
          f'{jax.default_backend()} backend, {len(devices)} x {devices[0].device_kind}')


def compare(batched: Callable[[], list], sequential: Callable[[], list], *, repeats: int,
            what: str, extra: dict, printer=print) -> dict:
  """Times both sides in alternation; prints a table and returns the figures.

  Args:
    batched, sequential: each trains every member and returns its final
      accuracies (an array per member, None where it diverged).
    repeats: repetitions; the first includes compilation.
    what: the workload in words, for the table's title.
    extra: figures to return beside the times (members, methods, rounds).
  """
  sides = {'batched': batched, 'sequential': sequential}
  times = {name: [] for name in sides}
  last = {}
  for repeat in range(repeats):
    order = list(sides) if repeat % 2 == 0 else list(sides)[::-1]
    for name in order:
      start = time.perf_counter()
      last[name] = sides[name]()
      times[name].append(time.perf_counter() - start)
  pairs = list(zip(last['batched'], last['sequential']))
  diffs = [float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in pairs
           if a is not None and b is not None]
  same_divergence = all((a is None) == (b is None) for a, b in pairs)
  figures = dict(extra, machine=machine(), batched_s=times['batched'],
                 sequential_s=times['sequential'],
                 speedup=[s / b for s, b in zip(times['sequential'], times['batched'])],
                 max_accuracy_diff=max(diffs, default=0.0), same_divergence=same_divergence)
  printer(f"benchmark: {what} on {figures['machine']}")
  printer(f"{'repetition':<16}{'batched (s)':>13}{'sequential (s)':>16}{'speedup':>9}")
  for r, (b, s) in enumerate(zip(times['batched'], times['sequential'])):
    label = f"{r + 1} ({'with compile' if r == 0 else 'compiled'})"
    printer(f'{label:<16}{b:>13.1f}{s:>16.1f}{s / b:>8.2f}x')
  printer(f"max |accuracy difference| batched vs sequential: "
          f"{figures['max_accuracy_diff']:.2g}"
          f"{'' if same_divergence else ' (divergence differs!)'}")
  printer(json.dumps(figures))
  return figures
