"""Training one method for T rounds, with periodic target evaluation.

The loop around a compiled ``round`` (``mg.federated.make_round``): per-round
keys from ``fold_in(key, t)``, a divergence guard (a non-finite loss or
parameter stops the method and marks it diverged), a target evaluation every
``eval_every`` rounds (the convergence curves of the paper's Fig. 4), and
timings (Table 1's training time, seconds per round, images per second).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mg import adapt
from mg import models
from mg.federated import local


class TargetScores(NamedTuple):
  """Per-target results of fast adaptation (numpy arrays over targets)."""
  accuracy: np.ndarray
  sparsity: Optional[np.ndarray]
  macs_ratio: Optional[float]
  adapt_time_s: float        # median compiled adaptation time per target


class TrainResult(NamedTuple):
  state: Any
  curve: dict                # {'round': [...], 'accuracy_mean': [...], ...}
  losses: list               # mean local training loss of every round
  round_times: list
  diverged_round: Optional[int]
  outputs: dict              # round -> output params at evaluation rounds


def make_target_fns(method):
  """Jitted ``adapt_one`` and ``eval_one`` over stacked target arrays."""

  @jax.jit
  def adapt_one(params, support, target, key, sparsity):
    return method.adapt(params, local.task_slice(support, target), key, sparsity)

  @jax.jit
  def eval_one(params, query, target):
    return adapt.evaluate(method.model, params, local.task_slice(query, target))

  return adapt_one, eval_one


def evaluate_targets(method, fns, params, support, query, key, sparsity=0.0,
                     time_it=False) -> TargetScores:
  """Fast adaptation on each target's support split, scored on its query split.

  The targets run one after another through one compiled function each (compiled
  once, whatever the number of targets); with ``time_it`` the compiled
  adaptation time of every target is measured (``block_until_ready``).
  """
  adapt_one, eval_one = fns
  num_targets = support.count.shape[0]
  sparsity = jnp.asarray(sparsity, jnp.float32)
  results, times = [], []
  for t in range(num_targets):
    target_key = jax.random.fold_in(key, t)
    if time_it and t == 0:
      jax.block_until_ready(adapt_one(params, support, t, target_key, sparsity))
    start = time.perf_counter()
    params_j, info = adapt_one(params, support, t, target_key, sparsity)
    jax.block_until_ready(params_j)
    times.append(time.perf_counter() - start)
    results.append((eval_one(params_j, query, t), info))
  accuracy = np.array([float(r.accuracy) for r, _ in results])
  gated = bool(method.model.gated_layers)
  sparsity_out, macs = None, None
  if gated:
    sparsity_out = np.array([float(r.sparsity) for r, _ in results])
    macs = float(np.mean([float(r.macs_ratio) for r, _ in results]))
  elif method.name == 'metasnip':
    kept = np.array([float(i['kept_weights']) for _, i in results])
    sparsity_out = 1.0 - kept
    macs = float(np.mean([snip_macs_ratio(method, k) for k in kept]))
  return TargetScores(accuracy, sparsity_out, macs,
                      statistics.median(times) if time_it else float('nan'))


def snip_macs_ratio(method, kept_fraction: float) -> float:
  """MACs of MetaSNIP's pruned network relative to dense, if zeros were skipped.

  Unstructured pruning saves the pruned fraction of the pruned layers' MACs
  only with sparse kernels; dense hardware saves nothing.
  """
  per_layer = models.layer_macs(method.model)
  layers = method.adapt.keywords['layers']
  pruned = sum(per_layer[l] for l in layers) * (1.0 - kept_fraction)
  total = sum(per_layer.values())
  return (total - pruned) / total


def train(method, state, round_fn, data, key, *, rounds, eval_every,
          evaluate=None, on_round=None, keep_outputs=False) -> TrainResult:
  """Runs ``rounds`` rounds of ``method`` from ``state``.

  Args:
    method: an ``mg.methods.Method`` with an algorithm.
    state: its initial server state.
    round_fn: ``round(state, data, key)`` from ``make_round``.
    data: the meta-training tasks' ``TaskArrays`` on the device.
    key: the method's PRNG key; round ``t`` uses ``fold_in(key, t)``.
    rounds: ``T``.
    eval_every: rounds between evaluations (the last round is always one).
    evaluate: ``evaluate(output_params, round) -> TargetScores`` or None.
    on_round: ``on_round(t, diagnostics_dict, scores_or_None)`` callback.
    keep_outputs: keep the output model of every evaluation round.

  Returns:
    A ``TrainResult``; on divergence the state is the last finite one.
  """
  curve = {'round': [], 'accuracy_mean': [], 'accuracy_std': [], 'sparsity_mean': []}
  round_times, losses, outputs, diverged = [], [], {}, None
  for t in range(1, rounds + 1):
    start = time.perf_counter()
    new_state, diagnostics = round_fn(state, data, jax.random.fold_in(key, t))
    diagnostics = jax.device_get(diagnostics)
    round_times.append(time.perf_counter() - start)
    loss = float(diagnostics.get('loss', 0.0))
    if not (bool(diagnostics['finite']) and np.isfinite(loss)):
      diverged = t
      if on_round:
        on_round(t, diagnostics, None)
      break
    state = new_state
    losses.append(loss)
    scores = None
    if evaluate is not None and (t % eval_every == 0 or t == rounds):
      output = method.algorithm.output(state)
      scores = evaluate(output, t)
      if keep_outputs:
        outputs[t] = output
      curve['round'].append(t)
      curve['accuracy_mean'].append(float(np.mean(scores.accuracy)))
      curve['accuracy_std'].append(float(np.std(scores.accuracy)))
      curve['sparsity_mean'].append(
          None if scores.sparsity is None else float(np.mean(scores.sparsity)))
    if on_round:
      on_round(t, diagnostics, scores)
  return TrainResult(state, curve, losses, round_times, diverged, outputs)
