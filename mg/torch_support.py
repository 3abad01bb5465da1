"""PyTorch, when installed: the speed references' shared setup.

torch is optional (the ``torch`` extra, not ``requirements.txt``); the
PyTorch reference rounds of both systems (``mg.metagater.torch_reference``,
``mg.reefl.torch_reference``) import it from here, so one place says whether it
imports and how many threads it runs on.
"""

from __future__ import annotations

import os
from typing import Optional

try:
  import torch
  import torch.nn.functional as F
except ImportError:  # torch is optional
  torch = None
  F = None


def available() -> bool:
  """Whether PyTorch imports in this environment."""
  return torch is not None


def cpu_count() -> int:
  """CPUs this process may run on (its affinity mask, else ``os.cpu_count``)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def set_threads(threads: Optional[int] = None) -> int:
  """``torch.set_num_threads(threads)``, default ``cpu_count()``; returns it."""
  threads = threads or cpu_count()
  torch.set_num_threads(threads)
  return threads
