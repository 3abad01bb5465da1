"""The server rules as the code computes them: float64 on the host, over dicts of uploads.

References for the device rules (``mg.federated.aggregation``,
``mg.reefl.algorithms.inclusivefl.aggregate``): the project's host versions
before the rules moved to the device, kept here to test against.
"""

from typing import Sequence

import numpy as np

from mg.models import vit
from mg.reefl.algorithms.inclusivefl import momentum_blocks


def aggregate(global_flat: dict, uploads: list[tuple[dict, float]]) -> dict:
  """Per-parameter example-weighted mean over the uploads that hold it (float64).

  Args:
    global_flat: ``{path: array}`` the server's current trainable parameters.
    uploads: ``[(flat trainable parameters of one client, its example count)]``.
  """
  num: dict[str, np.ndarray] = {}
  den: dict[str, float] = {}
  for flat, weight in uploads:
    for k, v in flat.items():
      num[k] = num.get(k, 0.0) + float(weight) * np.asarray(v, np.float64)
      den[k] = den.get(k, 0.0) + float(weight)
  return {k: (np.asarray(num[k] / den[k], np.float32) if den.get(k) else v)
          for k, v in global_flat.items()}


def feddyn_aggregate(global_flat: dict, h: dict, uploads: list[dict], num_clients: int,
                     alpha: float) -> tuple[dict, dict]:
  """FedDyn's server step per parameter (``aggregate_inplace_early_exit_feddyn``), float64.

  Args:
    global_flat: ``{path: array}`` the current trainable parameters.
    h: ``{path: array}`` the server's FedDyn state.
    uploads: the sampled clients' trainable parameters (each a subset of paths).
    num_clients: all clients ``N``; alpha: FedDyn's alpha.

  Returns:
    (new parameters, new h); a parameter no upload holds keeps its value and its h.
  """
  new, new_h = {}, {}
  for k, v in global_flat.items():
    held = [np.asarray(u[k], np.float64) for u in uploads if k in u]
    if not held:
      new[k], new_h[k] = v, h[k]
      continue
    mean = sum(held) / len(held)
    hk = np.asarray(h[k], np.float64) - alpha * len(held) * (mean - np.asarray(v, np.float64)) / num_clients
    new[k] = np.asarray(mean - hk / alpha, np.float32)
    new_h[k] = np.asarray(hk, np.float32)
  return new, new_h


def count_mean(global_flat: dict, uploads: Sequence[dict]) -> dict:
  """Entry-wise plain mean over the uploads' leading-index slices (``aggregate_scalefl``)."""
  out = {}
  for k, v in global_flat.items():
    total = np.zeros(v.shape, np.float64)
    count = np.zeros(v.shape, np.float64)
    for u in uploads:
      if k not in u:
        continue
      x = np.asarray(u[k], np.float64)
      index = tuple(slice(0, s) for s in x.shape)
      total[index] += x
      count[index] += 1
    out[k] = np.where(count > 0, total / np.maximum(count, 1), np.asarray(v, np.float64)
                      ).astype(np.float32)
  return out


def _weighted_mean(uploads):
  total = sum(w for _, w in uploads)
  return {k: sum(w * np.asarray(f[k], np.float64) for f, w in uploads) / total
          for k in uploads[0][0]}


def inclusivefl_aggregate(global_flat: dict, personal: list, momentum: list, groups: dict,
                          cfg: vit.ViTConfig, beta: float = 0.2) -> tuple[dict, list, list]:
  """One InclusiveFL server step (the module docstring), in float64 on the host.

  Args:
    global_flat: ``{path: array}`` the global (shared) parameters.
    personal: per tier ``{path: array}``, its personal layers.
    momentum: per tier ``{layer: array}`` (``layer`` a path inside a block).
    groups: ``{tier: [(flat trainable parameters of a client, example count)]}``.
    beta: the momentum weight.

  Returns:
    (new global parameters, new personal layers, new momenta).
  """
  acc, count = {}, {}
  personal = [dict(p) for p in personal]
  momentum = [dict(m) for m in momentum]
  last = cfg.num_exits - 1
  for t in sorted(groups):
    mean = _weighted_mean(groups[t])
    start = {k: np.asarray(personal[t].get(k, global_flat[k]), np.float64) for k in mean}
    grad = {k: start[k] - mean[k] for k in mean}
    if t != last:
      for k in personal[t]:
        if k.startswith('blocks/'):
          grad[k] = beta * np.asarray(momentum[t + 1][k.split('/', 2)[2]]) + (1 - beta) * grad[k]
    result = {k: start[k] - grad[k] for k in mean}
    n = len(groups[t])
    for k, v in result.items():
      if k in personal[t]:
        personal[t][k] = np.asarray(v, np.float32)
      else:
        acc[k] = acc.get(k, 0.0) + n * v
        count[k] = count.get(k, 0) + n
    blocks = momentum_blocks(cfg, t)
    for layer in momentum[t]:
      momentum[t][layer] = np.asarray(
          sum(grad[f'blocks/{b}/{layer}'] for b in blocks) / len(blocks), np.float32)
  for t in range(cfg.num_exits):
    if t not in groups:
      momentum[t] = {k: np.zeros_like(v) for k, v in momentum[t].items()}
  new = {k: (np.asarray(acc[k] / count[k], np.float32) if k in count else v)
         for k, v in global_flat.items()}
  return new, personal, momentum
