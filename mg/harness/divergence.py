"""When a round's loss says that training diverged: one rule for both systems.

A round diverges when its loss or parameters are not finite, or when its loss
is finite but more than ``LOSS_BOUND`` times the first round's: the model has
left any useful region (MetaGater with ``meta.local_lr=1e6`` reaches 1e27). The
method stops there, keeps its last good state, and its results read
``diverged`` with the round, never a number from the diverged model.
"""

from __future__ import annotations

import math
from typing import Optional

LOSS_BOUND = 1e6


def diverged(loss: float, finite: bool, first_loss: Optional[float]) -> bool:
  """Whether a round with mean training ``loss`` diverged.

  Args:
    loss: the round's mean training loss.
    finite: whether every parameter after the round is finite.
    first_loss: the first round's loss (None: this is the first round).
  """
  if not (finite and math.isfinite(loss)):
    return True
  return first_loss is not None and abs(loss) > LOSS_BOUND * max(abs(first_loss), 1e-12)
