"""One experiment: data, every configured method, the paper's tables and plots.

``run(config, workdir)`` is what ``python -m experiments.main`` calls. It
checks the config, loads the dataset, and for each repeat ``r`` draws the
federated partition of seed ``config.seed + r`` (printed) and trains each
method for ``meta.rounds`` rounds with target evaluations every
``eval_every`` rounds (training keys differ per repeat too), and writes to
the workdir:

* ``config.json``: the resolved config, the workdir's config of record;
* ``metrics.jsonl``: one JSON object per round and per evaluation, each with
  ``method`` and ``round`` (and ``repeat``);
* ``results.json`` / ``results.md``: the Table 1 and Table 2 style results,
  with the spread across repeats and across target tasks, and every
  repeat's partition;
* ``curves.png`` (accuracy after fast adaptation vs round, Fig. 4),
  ``loss.png`` (mean local training loss per round: convergence of the outer
  loop) and ``sparsity.png`` (per-target channel sparsity: its diversity);
* ``checkpoints/<step>/``: the run's progress (``mg.harness.checkpoint.Store``), saved
  every ``checkpoint_every`` rounds of a method, at the end of each method and
  on SIGINT/SIGTERM (then ``run`` raises ``mg.harness.checkpoint.Interrupted``).

Rerunning with the same workdir resumes from the newest readable checkpoint
and gives the results of an uninterrupted run (bit for bit on CPU: every
round's key is ``fold_in(key, t)`` of keys derived from the seed, and the
restored states have the live states' exact types). A workdir holding another
config is refused unless ``resume=False``. The results files are written only
once every method of every repeat is done.

What a checkpoint holds (``Ledger``):

* ``arrays``: ``rng`` (the repeat's key data), ``states/<method>`` (the server
  state, optimizer state included, of each method of the current repeat: final
  for the finished ones, current for the one training) and
  ``outputs/<method>/<round>`` (the output models MetaSNIP prunes, kept at the
  evaluation rounds of MetaGater w/o gating: saved, not recomputed);
* ``progress`` (JSON): the repeat, the method training and its rounds done,
  its curve, losses and round times so far, every finished method's summary
  and curve (finished methods are not retrained); the run harness
  (``mg.harness.session``, shared with ReeFL) adds the text of
  ``metrics.jsonl`` at the save (the log is rewritten to it on resume), the
  config of record and a digest of ``arrays``.

The harness holds the workdir for the whole run (one run at a time, its config
of record compared field by field) and writes ``config.json`` only once the run
is accepted (config checked, data loaded).
"""

from __future__ import annotations

import json
import os
import statistics
from typing import Any, Callable, NamedTuple, Optional

import jax
import numpy as np

from mg.harness import checkpoint as ckpt_lib
from mg.harness import divergence
from mg.metagater import config as config_lib
from mg import data as data_lib
from mg.metagater import methods as methods_lib
from mg import report
from mg.metagater import train as train_lib
from mg.harness import session as session_lib
from mg.federated import mapping
from mg.federated import sharding

# MetaSNIP needs MetaGater's sparsity and MetaGater w/o gating's backbone.
ORDER = ('fedavg', 'perfedavg_fo', 'perfedavg_hf', 'metagater_nogate', 'metagater',
          'metagater_unaccelerated', 'metasnip', 'metasnip_filters')
# What a fresh run in a workdir replaces (with resume=False).
OUTPUTS = ('metrics.jsonl', 'results.json', 'results.md', 'curves.png', 'loss.png',
           'sparsity.png')


def method_names(config) -> list:
  names = list(config.methods)
  if config.meta.compare_unaccelerated and 'metagater_unaccelerated' not in names:
    names.append('metagater_unaccelerated')
  return sorted(names, key=ORDER.index)


def run(config, workdir: str) -> dict:
  """Runs (or resumes) the experiment described by ``config``.

  Returns:
    ``results.json``'s dict.

  Raises:
    ConfigError, DataError: a bad config (before any work starts), or a
      workdir holding another config while ``config.resume`` is set.
    mg.harness.workdir.WorkdirError: the workdir is held by another run, or cannot
      hold this one (not a folder, not writable, an entry of the wrong kind).
    mg.harness.checkpoint.CheckpointError: a checkpoint could not be written (the
      previous ones stay usable).
    mg.harness.checkpoint.Interrupted: SIGINT/SIGTERM arrived; a checkpoint was saved.
  """
  config_lib.validate(config)
  with session_lib.Session(config, workdir, kind='run', outputs=OUTPUTS) as session:
    dataset = load_data(config)
    info = data_lib.info_of(dataset)
    config_lib.validate_tasks(config, data_lib.arrays_for(
        dataset, config.data, data_lib.partition_for(dataset, config.data, config.seed)))
    session.accept()
    print(f"dataset {info['name']}: {info['num_examples']} images "
          f"{tuple(info['input_shape'])}, {info['num_classes']} classes "
          f"(source {info['source']}, splits {info['splits_loaded']})", flush=True)
    names = method_names(config)
    strategy, mesh = client_layout(config)
    print(f"backend {jax.default_backend()} ({jax.device_count()} device(s)), client "
          f"mapping '{strategy}', methods {names}", flush=True)
    num_train = data_lib.partition_for(dataset, config.data, config.seed).num_train_tasks
    runners = build_runners(config, names, info, strategy, num_train, mesh)
    ledger = (Ledger() if session.restored is None
              else Ledger.from_checkpoint(session.restored))

    def save(where):
      session.save(*ledger.checkpoint(), where=where)

    for repeat in range(ledger.repeat, config.repeats):
      ledger.begin_repeat(repeat)
      part = data_lib.partition_for(dataset, config.data, config.seed + repeat)
      print(data_lib.describe(part), flush=True)
      fed = sharding.place(data_lib.arrays_for(dataset, config.data, part), mesh)
      run_repeat(config, runners, fed, repeat, session.log, ledger=ledger, save=save,
                 stop=session.stop)
      del fed
    partitions = [data_lib.partition_for(dataset, config.data, config.seed + r)
                  for r in range(config.repeats)]
    # Every method is done: a signal now waits the second the results take.
    return write_outputs(config, workdir, names, ledger, partitions, info, strategy,
                         session.resumes)


def write_outputs(config, workdir, names, ledger, partitions, info, strategy,
                  resumes=()) -> dict:
  """The results files and plots, from every repeat's finished methods.

  ``partitions``: every repeat's ``Partition``; ``results.json`` holds their
  statistics under ``partitions`` and the first one's under ``partition``.
  """
  per_repeat = {m: [] for m in names}
  curves, losses, hashes = {}, {}, {}
  for repeat in range(config.repeats):
    for m in names:
      summary, curve = ledger.finished(repeat, m)
      summary = dict(summary)
      if summary.get('losses'):
        losses.setdefault(m, []).append(summary.pop('losses'))
      hashes.setdefault(m, []).append(summary.pop('output_sha256', None))
      per_repeat[m].append(summary)
      curves.setdefault(m, []).append(curve)

  rows = [report.summarize(m, per_repeat[m]) for m in names]
  mean_curves = {m: report.mean_curve(c) for m, c in curves.items() if c and c[0]['round']}
  mean_losses = {m: np.mean([l[:min(map(len, ls))] for l in ls], axis=0).tolist()
                 for m, ls in losses.items()}
  extra = {'dataset': info, 'backend': jax.default_backend(), 'mapping': strategy,
           'partitions': [p.stats() for p in partitions],
           'curves': mean_curves, 'losses': mean_losses,
           'output_sha256': {m: h for m, h in hashes.items() if any(h)},
           'resumes': list(resumes)}
  markdown = report.write_results(workdir, rows, partitions[0].stats(), extra=extra)
  if mean_curves:  # none when every method diverged before its first evaluation
    report.plot_curves(os.path.join(workdir, 'curves.png'), mean_curves,
                       title=f"{info['name']}: target accuracy after fast adaptation")
  if mean_losses:
    report.plot_losses(os.path.join(workdir, 'loss.png'), mean_losses,
                       title=f"{info['name']}: meta-training loss per round")
  report.plot_sparsity(os.path.join(workdir, 'sparsity.png'),
                       {r['method']: r['target_sparsity'] for r in rows
                        if r.get('target_sparsity')})
  print(markdown, flush=True)
  print(f'results written to {workdir}', flush=True)
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def load_data(config):
  """The dataset of ``config.data``, checked by ``validate_dataset``."""
  return data_lib.load_checked(
      config.data,
      check=lambda dataset: config_lib.validate_dataset(
          config, dataset.labels, dataset.num_classes, dataset.name))


class Ledger:
  """Everything a checkpoint holds, kept up to date in memory as the run goes.

  Attributes:
    repeat: the repeat in progress.
    done: ``{repeat: {method: (summary, curve)}}`` of finished methods (JSON
      values, read back from JSON, so a fresh and a resumed run see the same).
    current: ``None`` or ``dict(method, rounds_done, curve, losses,
      round_times)`` of the method in training.
    states: ``{method: host leaves}`` of the current repeat's server states.
    outputs: ``{method: {round: host leaves}}`` of kept output models.
    rng: the current repeat's key data, or None.
  """

  def __init__(self):
    self.repeat = 0
    self.done, self.current = {}, None
    self.states, self.outputs, self.rng = {}, {}, None

  @classmethod
  def from_checkpoint(cls, restored: ckpt_lib.Restored) -> Ledger:
    p, arrays = restored.progress, restored.arrays
    ledger = cls()
    ledger.repeat = p['repeat']
    ledger.done = {int(r): {m: tuple(v) for m, v in ms.items()} for r, ms in p['done'].items()}
    ledger.current = p['current']
    ledger.states = dict(arrays.get('states', {}))
    ledger.outputs = {m: {int(t): v for t, v in o.items()}
                      for m, o in arrays.get('outputs', {}).items()}
    ledger.rng = arrays['rng']
    return ledger

  def begin_repeat(self, repeat: int):
    if repeat != self.repeat:
      self.repeat, self.current = repeat, None
      self.states, self.outputs, self.rng = {}, {}, None

  def finished(self, repeat: int, method: str):
    return self.done.get(repeat, {}).get(method)

  def finish(self, repeat, method, summary, curve, state=None, outputs=None):
    """Records a finished method; returns its ``(summary, curve)`` as JSON reads them."""
    record = ckpt_lib.json_roundtrip(report.to_jsonable([summary, curve]))
    self.done.setdefault(repeat, {})[method] = tuple(record)
    self.current = None
    if state is not None:
      self.states[method] = ckpt_lib.host_leaves(state)
    if outputs:
      self.outputs[method] = {t: ckpt_lib.host_leaves(o) for t, o in outputs.items()}
    return tuple(record)

  def update(self, method, progress: train_lib.TrainResult, keep_outputs: bool):
    """Records the progress of the method in training."""
    self.current = ckpt_lib.json_roundtrip(report.to_jsonable(dict(
        method=method, rounds_done=progress.rounds_done, curve=progress.curve,
        losses=progress.losses, round_times=progress.round_times)))
    self.states[method] = ckpt_lib.host_leaves(progress.state)
    if keep_outputs:
      self.outputs[method] = {t: ckpt_lib.host_leaves(o)
                              for t, o in progress.outputs.items()}

  def resume_point(self, repeat, method, state, output_like):
    """The ``TrainResult`` to continue ``method`` from, or None to start it."""
    c = self.current
    if c is None or self.repeat != repeat or c['method'] != method:
      return None
    state = ckpt_lib.restore_like(state, self.states[method], f'{method} state')
    return train_lib.TrainResult(
        state, c['curve'], c['losses'], c['round_times'], None,
        self.restored_outputs(method, output_like), c['rounds_done'])

  def restored_outputs(self, method, output_like) -> dict:
    return {t: ckpt_lib.restore_like(output_like, leaves, f'{method} output {t}')
            for t, leaves in sorted(self.outputs.get(method, {}).items())}

  def checkpoint(self):
    """``(arrays, progress)`` for ``Session.save``."""
    arrays = {'rng': self.rng}
    if self.states:
      arrays['states'] = dict(self.states)
    outputs = {m: {str(t): v for t, v in o.items()} for m, o in self.outputs.items() if o}
    if outputs:
      arrays['outputs'] = outputs
    progress = dict(
        format=2, repeat=self.repeat, current=self.current,
        done={str(r): {m: list(v) for m, v in ms.items()} for r, ms in self.done.items()})
    return arrays, report.to_jsonable(progress)


class Runner(NamedTuple):
  """A method with its compiled round and target functions (built once)."""
  method: methods_lib.Method
  round_fn: Optional[Callable]
  target_fns: tuple
  mesh: Optional[Any] = None


def client_strategy(config, devices: int = 1) -> str:
  """``meta.mapping`` resolved ('auto': the measured default for this backend)."""
  return mapping.resolve_strategy(
      config.meta.mapping, config.model.name, config.meta.local_steps, devices=devices,
      tasks_per_round=config.meta.tasks_per_round)


def client_layout(config):
  """``(strategy, mesh)``: how a round maps its clients, and over which devices.

  The mesh (a ``clients`` axis over every device) is kept only for strategies
  with a task axis in the program (``mapping.SHARDABLE``); ``None`` otherwise.
  """
  mesh = sharding.round_mesh(config.meta.shard_clients)
  strategy = client_strategy(config, devices=sharding.num_shards(mesh))
  return strategy, (mesh if strategy in mapping.SHARDABLE else None)


def build_runners(config, names, info, strategy, num_train, mesh=None) -> dict:
  """Every method's compiled pieces, shared by all repeats (compiled once)."""
  runners = {}
  fallback = mapping.fallback_strategy(jax.default_backend(), config.model.name,
                                       devices=sharding.num_shards(mesh))
  for name in names:
    method = methods_lib.build(name, config, info)
    round_fn = None
    if method.algorithm is not None:
      round_fn = mapping.make_round(method.algorithm, num_tasks=num_train,
                                    tasks_per_round=config.meta.tasks_per_round,
                                    strategy=strategy, mesh=mesh, fallback=fallback)
    runners[name] = Runner(method, round_fn, train_lib.make_target_fns(method), mesh)
  return runners


def repeat_key(seed: int, repeat: int) -> jax.Array:
  """The PRNG key of one repeat of a run with ``config.seed = seed``."""
  return jax.random.key(seed + 1000 * (repeat + 1))


def method_keys(key: jax.Array, name: str):
  """``(init, train, eval)`` keys of method ``name`` from a repeat's key.

  Every method starts from the same initial key (the same ``theta`` for the
  gated and plain backbones); training and evaluation keys are the method's own.
  """
  init_key, train_key, eval_key = jax.random.split(key, 3)
  index = ORDER.index(name)
  return init_key, jax.random.fold_in(train_key, index), jax.random.fold_in(eval_key, index)


def run_repeat(config, runners, fed, repeat, log, ledger=None, save=None,
               stop=None) -> dict:
  """Trains and evaluates every method once; returns ``{method: (summary, curve)}``.

  Methods finished in ``ledger`` are not retrained; the one in training there
  continues from its state. ``save(where)`` writes a checkpoint of the ledger;
  a true ``stop`` (a ``StopRequest``) makes the run save and raise
  ``mg.harness.checkpoint.Interrupted`` at the next round boundary.
  """
  ledger = ledger if ledger is not None else Ledger()
  save = save or (lambda where: None)
  stop = stop if stop is not None else ckpt_lib.StopRequest()
  if ledger.rng is None:
    ledger.rng = ckpt_lib.host_leaves(repeat_key(config.seed, repeat))[0]
  key = jax.random.wrap_key_data(ledger.rng)
  train_data = fed.train
  names = list(runners)
  out, outputs = {}, {}
  for name, (method, round_fn, target_fns, runner_mesh) in runners.items():
    init_key, method_train_key, method_eval_key = method_keys(key, name)
    keep = name == 'metagater_nogate' and bool(set(methods_lib.BACKBONE_OF) & set(names))
    finished = ledger.finished(repeat, name)
    if finished is not None:
      out[name] = finished
      if keep:
        outputs[name] = ledger.restored_outputs(name, method.model.init(init_key))
      continue
    where = f'{name} (repeat {repeat + 1})'
    if stop:
      raise ckpt_lib.Interrupted(stop.signum, f'the start of {where}')
    sparsity_of = (_snip_sparsity(out) if name in methods_lib.BACKBONE_OF
                   else (lambda r: 0.0))

    def evaluate(params, t, time_it=False, method=method, fns=target_fns,
                 key=method_eval_key, sparsity_of=sparsity_of):
      return train_lib.evaluate_targets(
          method, fns, params, fed.target_support, fed.target_query,
          jax.random.fold_in(key, t), sparsity=sparsity_of(t), time_it=time_it)

    if method.algorithm is None:
      summary, curve = _adapt_only(config, method, outputs, out, evaluate, repeat, log)
      out[name] = ledger.finish(repeat, name, summary, curve)
      save(f'the end of {where}')
      if stop:
        raise ckpt_lib.Interrupted(stop.signum, f'the end of {where}')
      continue
    params = method.model.init(init_key)
    state = sharding.place(method.algorithm.init(params, **method.hparams), runner_mesh)
    resume = ledger.resume_point(repeat, name, state, params)
    bar = report.progress(config.meta.rounds, f'{name} (repeat {repeat + 1})',
                          enabled=config.progress)
    if resume is not None:
      bar.update(resume.rounds_done)

    def on_round(t, diagnostics, scores, name=name, bar=bar):
      fields = {k: v for k, v in diagnostics.items() if k != 'finite'}
      log.write(name, t, repeat=repeat, **fields)
      postfix = {'loss': f"{float(diagnostics.get('loss', float('nan'))):.3f}"}
      if scores is not None:
        acc = float(np.mean(scores.accuracy))
        log.write(name, t, repeat=repeat, event='eval', accuracy=acc,
                  target_accuracy=scores.accuracy,
                  sparsity=None if scores.sparsity is None else float(np.mean(scores.sparsity)))
        postfix['acc'] = f'{acc:.3f}'
      bar.set_postfix(postfix)
      bar.update(1)

    def checkpoint(progress, name=name, keep=keep, where=where):
      ledger.update(name, progress, keep)
      save(f'round {progress.rounds_done} of {where}')

    nan_round = (config.debug_nan_round
                 if config.debug_nan_method in ('', name) else 0)
    result = train_lib.train(
        method, state, round_fn, train_data, method_train_key,
        rounds=config.meta.rounds, eval_every=config.eval_every,
        evaluate=evaluate, on_round=on_round, keep_outputs=keep, resume=resume,
        checkpoint=checkpoint, checkpoint_every=config.checkpoint_every,
        should_stop=lambda: bool(stop), nan_at_round=nan_round)
    bar.close()
    if result.stopped:
      raise ckpt_lib.Interrupted(stop.signum, f'round {result.rounds_done} of {where}')
    if keep:
      outputs[name] = result.outputs
    summary, curve = _summarize_training(config, method, result, evaluate, train_data,
                                         name, log, repeat)
    out[name] = ledger.finish(repeat, name, summary, curve, state=result.state,
                              outputs=result.outputs if keep else None)
    save(f'the end of {where}')
    if stop:
      raise ckpt_lib.Interrupted(stop.signum, f'the end of {where}')
  return out


_STAGE_REASONS = {
    'training': 'non-finite loss or parameters, or a loss above '
                f'{divergence.LOSS_BOUND:g} x the first round\'s',
    'adaptation': 'non-finite parameters after fast adaptation at a target',
    'evaluation': 'non-finite logits at a target evaluation',
}


def _diverged(summary, name, t, stage, repeat, kept, log):
  """Marks ``summary`` diverged at round ``t`` in ``stage``; says so once."""
  kept = ('' if kept is None else
          f', kept its last good state (round {kept}) in the checkpoint')
  print(f'{name}: diverged at round {t} of repeat {repeat + 1} ({stage}: '
        f'{_STAGE_REASONS[stage]}): stopped it{kept} and marked its results diverged',
        flush=True)
  summary.update(diverged=True, diverged_round=t, diverged_stage=stage, accuracy=None,
                 target_accuracy=[], sparsity=None, target_sparsity=None,
                 macs_ratio=None, adapt_time_s=None)
  log.write(name, t, repeat=repeat, event='diverged', stage=stage)
  return summary


def _summarize_training(config, method, result, evaluate, train_data, name, log, repeat):
  times = result.round_times
  summary = dict(rounds=config.meta.rounds, local_steps=method.local_steps,
                 train_time_s=float(sum(times)), losses=result.losses,
                 diverged=result.diverged_round is not None)
  if result.diverged_round is not None:
    return _diverged(summary, name, result.diverged_round, result.diverged_stage, repeat,
                     result.rounds_done, log), result.curve
  steady = times[1:] or times
  seconds = statistics.median(steady)
  batch = config.meta.batch_size or float(np.mean(np.asarray(train_data.count)))
  images = config.meta.tasks_per_round * method.local_steps * method.images_per_step * batch
  output = method.algorithm.output(result.state)
  scores = evaluate(output, config.meta.rounds, time_it=True)
  if scores.nonfinite:
    return _diverged(summary, name, config.meta.rounds, scores.nonfinite, repeat,
                     result.rounds_done, log), result.curve
  summary.update(_scores_summary(scores), seconds_per_round=seconds,
                 images_per_second=images / seconds if images else None,
                 compile_s=max(times[0] - seconds, 0.0),
                 output_sha256=ckpt_lib.digest(ckpt_lib.host_leaves(output)))
  log.write(name, config.meta.rounds, repeat=repeat, event='final',
            **{k: v for k, v in summary.items()
               if k not in ('target_accuracy', 'losses', 'output_sha256')})
  return summary, result.curve


def _scores_summary(scores) -> dict:
  return dict(
      accuracy=float(np.mean(scores.accuracy)), target_accuracy=scores.accuracy.tolist(),
      sparsity=None if scores.sparsity is None else float(np.mean(scores.sparsity)),
      target_sparsity=None if scores.sparsity is None else scores.sparsity.tolist(),
      sparsity_kind=scores.sparsity_kind,
      macs_ratio=scores.macs_ratio, adapt_time_s=scores.adapt_time_s)


def _snip_sparsity(out):
  """MetaSNIP's target sparsity at round ``t``: MetaGater's mean channel sparsity then."""
  summary, curve = out.get('metagater', (None, None))
  if summary is None:
    raise config_lib.ConfigError(
        "methods: metasnip and metasnip_filters prune at MetaGater's sparsity, so they "
        "need 'metagater' in methods")
  if summary.get('sparsity') is None:
    return None
  by_round = dict(zip(curve['round'], curve['sparsity_mean']))
  return lambda t: by_round.get(t, summary['sparsity'])


def _not_run(method, base, reason: str):
  print(f'{method.name}: not run: {reason}; its results read "not run"', flush=True)
  summary = dict(rounds=base['rounds'], local_steps=base['local_steps'],
                 train_time_s=None, diverged=False, not_run=reason, accuracy=None,
                 target_accuracy=[], sparsity=None, target_sparsity=None,
                 macs_ratio=None, adapt_time_s=None)
  return summary, {'round': [], 'accuracy_mean': [], 'accuracy_std': [],
                   'sparsity_mean': []}


def _adapt_only(config, method, outputs, out, evaluate, repeat, log):
  """MetaSNIP: MetaGater w/o gating's backbones, pruned and adapted at targets."""
  backbone = methods_lib.BACKBONE_OF[method.name]
  if backbone not in out:
    raise config_lib.ConfigError(
        f"methods: {method.name} adapts {backbone}'s meta-model, so it needs "
        f"'{backbone}' in methods")
  base = out[backbone][0]
  if base['diverged']:
    return _not_run(method, base, f'{backbone}, whose meta-model it prunes, diverged')
  if _snip_sparsity(out) is None:
    return _not_run(method, base, 'metagater, whose sparsity it matches, diverged')
  curve = {'round': [], 'accuracy_mean': [], 'accuracy_std': [], 'sparsity_mean': []}
  rounds = sorted(outputs[backbone])
  for t in rounds:
    scores = evaluate(outputs[backbone][t], t, time_it=(t == rounds[-1]))
    if scores.nonfinite:
      summary = dict(rounds=base['rounds'], local_steps=base['local_steps'],
                     train_time_s=base['train_time_s'])
      return _diverged(summary, method.name, t, scores.nonfinite, repeat, None, log), curve
    curve['round'].append(t)
    curve['accuracy_mean'].append(float(np.mean(scores.accuracy)))
    curve['accuracy_std'].append(float(np.std(scores.accuracy)))
    curve['sparsity_mean'].append(float(np.mean(scores.sparsity)))
    log.write(method.name, t, repeat=repeat, event='eval',
              accuracy=curve['accuracy_mean'][-1], target_accuracy=scores.accuracy,
              sparsity=curve['sparsity_mean'][-1])
  summary = dict(rounds=base['rounds'], local_steps=base['local_steps'],
                 train_time_s=base['train_time_s'], diverged=False,
                 **_scores_summary(scores))
  return summary, curve
