"""Training one method for T rounds, with periodic target evaluation.

The loop around a compiled ``round`` (``mg.federated.make_round``): per-round
keys from ``fold_in(key, t)``, a divergence guard (a non-finite loss or
parameter, a loss above ``mg.harness.divergence.LOSS_BOUND`` times the first round's, or non-finite
adapted parameters or logits at a target evaluation stop the method and mark
it diverged, with the stage and round), a target evaluation every
``eval_every`` rounds (the convergence curves of the paper's Fig. 4), and
timings (Table 1's training time, seconds per round, images per second).
It resumes from a ``TrainResult`` (a checkpoint), hands its progress to a
``checkpoint`` callback every few rounds, and stops at a round boundary when
asked to (SIGINT/SIGTERM, see ``mg.harness.checkpoint.StopRequest``).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mg.metagater import adapt
from mg import models
from mg.federated import local
from mg.harness import divergence

class TargetScores(NamedTuple):
  """Per-target results of fast adaptation (numpy arrays over targets).

  ``sparsity_kind`` says what ``sparsity`` counts: ``'channel'`` (gated
  channels off, or filters pruned), ``'weight'`` (unstructured MetaSNIP), or
  None when the method prunes nothing.
  """
  accuracy: np.ndarray
  sparsity: Optional[np.ndarray]
  macs_ratio: Optional[float]
  adapt_time_s: float        # median compiled adaptation time per target
  # Where a target first turned non-finite: 'adaptation' (the adapted
  # parameters) or 'evaluation' (the logits); None when every value is finite.
  nonfinite: Optional[str] = None
  sparsity_kind: Optional[str] = None


class TrainResult(NamedTuple):
  """A method's training so far (complete, diverged or stopped on request).

  ``curve``, ``losses``, ``round_times`` and ``outputs`` cover rounds
  ``1..rounds_done``; a ``TrainResult`` is also what ``train`` resumes from.
  """
  state: Any
  curve: dict                # {'round': [...], 'accuracy_mean': [...], ...}
  losses: list               # mean local training loss of every round
  round_times: list
  diverged_round: Optional[int]
  outputs: dict              # round -> output params at evaluation rounds
  rounds_done: int = 0       # the last round whose state is ``state``
  stopped: bool = False      # stopped early because ``should_stop()`` was true
  diverged_stage: Optional[str] = None  # 'training' | 'adaptation' | 'evaluation'


def empty_curve() -> dict:
  return {'round': [], 'accuracy_mean': [], 'accuracy_std': [], 'sparsity_mean': []}


def fresh(state) -> TrainResult:
  """The ``TrainResult`` of no round yet: where a fresh training begins."""
  return TrainResult(state, empty_curve(), [], [], None, {}, 0, False)


def poison(state):
  """``state`` with NaN parameters: fault injection for the divergence guard."""
  return state._replace(params=jax.tree.map(
      lambda x: jnp.full_like(x, jnp.nan) if jnp.issubdtype(x.dtype, jnp.floating) else x,
      state.params))


def make_target_fns(method):
  """Jitted ``adapt_one`` and ``eval_one`` over stacked target arrays."""

  @jax.jit
  def adapt_one(params, support, target, key, sparsity):
    params_j, info = method.adapt(params, local.task_slice(support, target), key, sparsity)
    return params_j, info, adapt.all_finite(params_j)

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
  results, times, stage = [], [], None
  for t in range(num_targets):
    target_key = jax.random.fold_in(key, t)
    if time_it and t == 0:
      jax.block_until_ready(adapt_one(params, support, t, target_key, sparsity))
    start = time.perf_counter()
    params_j, info, finite = adapt_one(params, support, t, target_key, sparsity)
    jax.block_until_ready(params_j)
    times.append(time.perf_counter() - start)
    results.append((eval_one(params_j, query, t), info))
    stage = stage or _nonfinite_stage(finite, results[-1][0].finite)
  accuracy = np.array([float(r.accuracy) for r, _ in results])
  gated = bool(method.model.gated_layers)
  sparsity_out, macs, kind = None, None, None
  if gated:
    sparsity_out = np.array([float(r.sparsity) for r, _ in results])
    macs = float(np.mean([float(r.macs_ratio) for r, _ in results]))
    kind = 'channel'
  elif method.name == 'metasnip':
    kept = np.array([float(i['kept_weights']) for _, i in results])
    sparsity_out = 1.0 - kept
    macs = float(np.mean([snip_macs_ratio(method, k) for k in kept]))
    kind = 'weight'
  elif method.name == 'metasnip_filters':
    keeps = [jax.device_get(i['kept_channels']) for _, i in results]
    sparsity_out = np.array([1.0 - np.mean(np.concatenate([k[l] for l in sorted(k)]))
                             for k in keeps])
    dense = models.macs(method.model)
    macs = float(np.mean([float(models.macs(method.model, k)) / dense for k in keeps]))
    kind = 'channel'
  return TargetScores(accuracy, sparsity_out, macs,
                      statistics.median(times) if time_it else float('nan'),
                      nonfinite=stage, sparsity_kind=kind)


def _nonfinite_stage(params_finite, logits_finite) -> Optional[str]:
  if not bool(params_finite):
    return 'adaptation'
  return None if bool(logits_finite) else 'evaluation'


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
          evaluate=None, on_round=None, keep_outputs=False, resume=None,
          checkpoint=None, checkpoint_every=0, should_stop=None,
          nan_at_round=0) -> TrainResult:
  """Runs rounds ``rounds_done + 1 .. rounds`` of ``method``.

  Args:
    method: an ``mg.metagater.methods.Method`` with an algorithm.
    state: its initial server state (ignored when ``resume`` is given).
    round_fn: ``round(state, data, key)`` from ``make_round``.
    data: the meta-training tasks' ``TaskArrays`` on the device.
    key: the method's PRNG key; round ``t`` uses ``fold_in(key, t)``, so a
      resumed run draws exactly the keys of an uninterrupted one.
    rounds: ``T``.
    eval_every: rounds between evaluations (the last round is always one).
    evaluate: ``evaluate(output_params, round) -> TargetScores`` or None.
    on_round: ``on_round(t, diagnostics_dict, scores_or_None)`` callback.
    keep_outputs: keep the output model of every evaluation round.
    resume: a ``TrainResult`` to continue (e.g. restored from a checkpoint).
    checkpoint: ``checkpoint(progress: TrainResult)``, called after every
      ``checkpoint_every``-th round before the last and when stopping on
      request (the caller saves the finished method itself).
    checkpoint_every: rounds between checkpoints (0: none during training).
    should_stop: polled after every round; when true, training checkpoints and
      returns with ``stopped=True``.
    nan_at_round: fault injection: NaN parameters enter round ``t`` (0: never).

  Returns:
    A ``TrainResult``; on divergence the state is the last good one and
    ``diverged_round`` / ``diverged_stage`` say which round failed and where:
    ``'training'`` (a non-finite loss or parameter, or a loss above
    ``divergence.LOSS_BOUND`` times the first round's), ``'adaptation'`` or
    ``'evaluation'`` (non-finite adapted parameters or logits at a target).
  """
  progress = resume if resume is not None else fresh(state)
  state = progress.state
  curve = {k: list(v) for k, v in progress.curve.items()}
  losses, round_times = list(progress.losses), list(progress.round_times)
  outputs, diverged, stage = dict(progress.outputs), None, None
  done = progress.rounds_done
  for t in range(done + 1, rounds + 1):
    start_time = time.perf_counter()
    state_in = poison(state) if t == nan_at_round else state
    new_state, diagnostics = round_fn(state_in, data, jax.random.fold_in(key, t))
    diagnostics = jax.device_get(diagnostics)
    round_times.append(time.perf_counter() - start_time)
    loss = float(diagnostics.get('loss', 0.0))
    if divergence.diverged(loss, bool(diagnostics['finite']), losses[0] if losses else None):
      diverged, stage = t, 'training'
      if on_round:
        on_round(t, diagnostics, None)
      break
    state, done = new_state, t
    losses.append(loss)
    scores = None
    if evaluate is not None and (t % eval_every == 0 or t == rounds):
      output = method.algorithm.output(state)
      scores = evaluate(output, t)
      if scores.nonfinite:
        diverged, stage = t, scores.nonfinite
        if on_round:
          on_round(t, diagnostics, None)
        break
      if keep_outputs:
        outputs[t] = output
      curve['round'].append(t)
      curve['accuracy_mean'].append(float(np.mean(scores.accuracy)))
      curve['accuracy_std'].append(float(np.std(scores.accuracy)))
      curve['sparsity_mean'].append(
          None if scores.sparsity is None else float(np.mean(scores.sparsity)))
    if on_round:
      on_round(t, diagnostics, scores)
    stop = bool(should_stop()) if should_stop is not None else False
    if t < rounds and (stop or (checkpoint_every and t % checkpoint_every == 0)):
      if checkpoint is not None:
        checkpoint(TrainResult(state, curve, losses, round_times, None, outputs, t))
    if stop and t < rounds:
      return TrainResult(state, curve, losses, round_times, None, outputs, t, True)
  return TrainResult(state, curve, losses, round_times, diverged, outputs, done,
                     diverged_stage=stage)
