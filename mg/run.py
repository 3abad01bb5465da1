"""One experiment: data, every configured method, the paper's tables and plots.

``run(config, workdir)`` is what ``python -m experiments.main`` calls. It
checks the config, builds the federated partition (printed), trains each
method for ``meta.rounds`` rounds with target evaluations every
``eval_every`` rounds, repeats with different training seeds, and writes to
the workdir:

* ``config.json``: the resolved config;
* ``metrics.jsonl``: one JSON object per round and per evaluation, each with
  ``method`` and ``round`` (and ``repeat``);
* ``results.json`` / ``results.md``: the Table 1 and Table 2 style results;
* ``curves.png`` (accuracy after fast adaptation vs round, Fig. 4),
  ``loss.png`` (mean local training loss per round: convergence of the outer
  loop) and ``sparsity.png`` (per-target channel sparsity: its diversity).
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mg import config as config_lib
from mg import data as data_lib
from mg import methods as methods_lib
from mg import report
from mg import train as train_lib
from mg.federated import mapping

# MetaSNIP needs MetaGater's sparsity and MetaGater w/o gating's backbone.
_ORDER = ('fedavg', 'perfedavg_fo', 'perfedavg_hf', 'metagater_nogate', 'metagater',
          'metagater_unaccelerated', 'metasnip')


def default_workdir(config_name: str) -> str:
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  return os.path.join('runs', f'{config_name}-{stamp}')


def method_names(config) -> list:
  names = list(config.methods)
  if config.meta.compare_unaccelerated and 'metagater_unaccelerated' not in names:
    names.append('metagater_unaccelerated')
  return sorted(names, key=_ORDER.index)


def run(config, workdir: str) -> dict:
  """Runs the experiment described by ``config``; returns ``results.json``'s dict."""
  config_lib.validate(config)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))

  fed, partition, info = data_lib.build(config.data, config.seed)
  print(data_lib.describe(partition), flush=True)
  print(f"dataset {info['name']}: {info['num_examples']} images "
        f"{tuple(info['input_shape'])}, {info['num_classes']} classes "
        f"(source {info['source']}, splits {info['splits_loaded']})", flush=True)
  fed = jax.device_put(fed)

  names = method_names(config)
  strategy = mapping.resolve_strategy(config.meta.mapping, config.model.name)
  print(f"backend {jax.default_backend()}, client mapping '{strategy}', "
        f'methods {names}', flush=True)
  per_repeat = {m: [] for m in names}
  curves, losses = {}, {}
  runners = build_runners(config, names, info, strategy,
                          int(fed.train_support.count.shape[0]))
  with report.MetricsLog(os.path.join(workdir, 'metrics.jsonl')) as log:
    for repeat in range(config.repeats):
      results = run_repeat(config, runners, fed, repeat, log)
      for m, (summary, curve) in results.items():
        per_repeat[m].append(summary)
        curves.setdefault(m, []).append(curve)
        if summary.get('losses'):
          losses.setdefault(m, []).append(summary.pop('losses'))

  rows = []
  for m in names:
    row = report.summarize(m, per_repeat[m])
    for key in ('seconds_per_round', 'images_per_second', 'compile_s'):
      values = [r[key] for r in per_repeat[m] if r.get(key) is not None]
      row[key] = float(np.mean(values)) if values and not row['diverged'] else None
    rows.append(row)
  mean_curves = {m: _mean_curve(c) for m, c in curves.items() if c and c[0]['round']}
  mean_losses = {m: np.mean([l[:min(map(len, ls))] for l in ls], axis=0).tolist()
                 for m, ls in losses.items()}
  extra = {'dataset': info, 'backend': jax.default_backend(), 'mapping': strategy,
           'curves': mean_curves, 'losses': mean_losses}
  markdown = report.write_results(workdir, rows, partition.stats(), extra=extra)
  report.plot_curves(os.path.join(workdir, 'curves.png'), mean_curves,
                     title=f"{info['name']}: target accuracy after fast adaptation")
  report.plot_losses(os.path.join(workdir, 'loss.png'), mean_losses,
                     title=f"{info['name']}: meta-training loss per round")
  report.plot_sparsity(os.path.join(workdir, 'sparsity.png'),
                       {r['method']: r['target_sparsity'] for r in rows
                        if r.get('target_sparsity')})
  print(markdown, flush=True)
  print(f'results written to {workdir}', flush=True)
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def _mean_curve(curves: list) -> dict:
  """Averages repeats' curves over the rounds they share."""
  rounds = curves[0]['round']
  shared = [c for c in curves if c['round'] == rounds]
  acc = np.array([c['accuracy_mean'] for c in shared])
  return {'round': rounds, 'accuracy_mean': acc.mean(0).tolist(),
          'accuracy_std': (acc.std(0) if len(shared) > 1
                           else np.array(shared[0]['accuracy_std'])).tolist()}


class Runner(NamedTuple):
  """A method with its compiled round and target functions (built once)."""
  method: methods_lib.Method
  round_fn: Optional[Callable]
  target_fns: tuple


def build_runners(config, names, info, strategy, num_train) -> dict:
  """Every method's compiled pieces, shared by all repeats (compiled once)."""
  runners = {}
  for name in names:
    method = methods_lib.build(name, config, info)
    round_fn = None
    if method.algorithm is not None:
      round_fn = mapping.make_round(method.algorithm, num_tasks=num_train,
                                    tasks_per_round=config.meta.tasks_per_round,
                                    strategy=strategy)
    runners[name] = Runner(method, round_fn, train_lib.make_target_fns(method))
  return runners


def run_repeat(config, runners, fed, repeat, log) -> dict:
  """Trains and evaluates every method once; returns ``{method: (summary, curve)}``."""
  key = jax.random.key(config.seed + 1000 * (repeat + 1))
  init_key, train_key, eval_key = jax.random.split(key, 3)
  train_data = fed.train_support
  names = list(runners)
  out, outputs = {}, {}
  for name, (method, round_fn, target_fns) in runners.items():
    method_eval_key = jax.random.fold_in(eval_key, _ORDER.index(name))
    sparsity_of = _snip_sparsity(out) if name == 'metasnip' else (lambda r: 0.0)

    def evaluate(params, t, time_it=False, method=method, fns=target_fns,
                 key=method_eval_key, sparsity_of=sparsity_of):
      return train_lib.evaluate_targets(
          method, fns, params, fed.target_support, fed.target_query,
          jax.random.fold_in(key, t), sparsity=sparsity_of(t), time_it=time_it)

    if method.algorithm is None:
      out[name] = _adapt_only(config, method, outputs, out, evaluate, repeat, log)
      continue
    params = method.model.init(init_key)
    state = method.algorithm.init(params, **method.hparams)
    bar = report.progress(config.meta.rounds, f'{name} (repeat {repeat + 1})',
                          enabled=config.progress)

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

    keep = name == 'metagater_nogate' and 'metasnip' in names
    result = train_lib.train(
        method, state, round_fn, train_data, jax.random.fold_in(train_key, _ORDER.index(name)),
        rounds=config.meta.rounds, eval_every=config.eval_every,
        evaluate=evaluate, on_round=on_round, keep_outputs=keep)
    bar.close()
    if keep:
      outputs[name] = result.outputs
    out[name] = _summarize_training(config, method, result, evaluate, train_data, name, log,
                                    repeat)
  return out


def _summarize_training(config, method, result, evaluate, train_data, name, log, repeat):
  times = result.round_times
  summary = dict(rounds=config.meta.rounds, local_steps=method.local_steps,
                 train_time_s=float(sum(times)), losses=result.losses,
                 diverged=result.diverged_round is not None)
  if result.diverged_round is not None:
    print(f'{name}: diverged at round {result.diverged_round} (non-finite loss or '
          'parameters); its results are marked diverged', flush=True)
    summary.update(diverged_round=result.diverged_round, accuracy=None,
                   target_accuracy=[], sparsity=None, target_sparsity=None,
                   macs_ratio=None, adapt_time_s=None)
    return summary, result.curve
  steady = times[1:] or times
  seconds = statistics.median(steady)
  batch = config.meta.batch_size or float(np.mean(np.asarray(train_data.count)))
  images = config.meta.tasks_per_round * method.local_steps * method.images_per_step * batch
  scores = evaluate(method.algorithm.output(result.state), config.meta.rounds, time_it=True)
  summary.update(_scores_summary(scores), seconds_per_round=seconds,
                 images_per_second=images / seconds if images else None,
                 compile_s=max(times[0] - seconds, 0.0))
  log.write(name, config.meta.rounds, repeat=repeat, event='final',
            **{k: v for k, v in summary.items() if k not in ('target_accuracy', 'losses')})
  return summary, result.curve


def _scores_summary(scores) -> dict:
  return dict(
      accuracy=float(np.mean(scores.accuracy)), target_accuracy=scores.accuracy.tolist(),
      sparsity=None if scores.sparsity is None else float(np.mean(scores.sparsity)),
      target_sparsity=None if scores.sparsity is None else scores.sparsity.tolist(),
      macs_ratio=scores.macs_ratio, adapt_time_s=scores.adapt_time_s)


def _snip_sparsity(out):
  """MetaSNIP's target sparsity at round ``t``: MetaGater's mean sparsity then."""
  summary, curve = out.get('metagater', (None, None))
  if summary is None or summary.get('sparsity') is None:
    raise config_lib.ConfigError(
        'methods: metasnip prunes at MetaGater\'s sparsity, so it needs '
        "'metagater' in methods (and a run of it that did not diverge)")
  by_round = dict(zip(curve['round'], curve['sparsity_mean']))
  return lambda t: by_round.get(t, summary['sparsity'])


def _adapt_only(config, method, outputs, out, evaluate, repeat, log):
  """MetaSNIP: MetaGater w/o gating's backbones, pruned and adapted at targets."""
  backbone = methods_lib.BACKBONE_OF[method.name]
  if backbone not in out or out[backbone][0]['diverged']:
    raise config_lib.ConfigError(
        f"methods: {method.name} adapts {backbone}'s meta-model, so it needs "
        f"'{backbone}' in methods (and a run of it that did not diverge)")
  curve = {'round': [], 'accuracy_mean': [], 'accuracy_std': [], 'sparsity_mean': []}
  rounds = sorted(outputs[backbone])
  for t in rounds:
    scores = evaluate(outputs[backbone][t], t, time_it=(t == rounds[-1]))
    curve['round'].append(t)
    curve['accuracy_mean'].append(float(np.mean(scores.accuracy)))
    curve['accuracy_std'].append(float(np.std(scores.accuracy)))
    curve['sparsity_mean'].append(float(np.mean(scores.sparsity)))
    log.write(method.name, t, repeat=repeat, event='eval',
              accuracy=curve['accuracy_mean'][-1], target_accuracy=scores.accuracy,
              sparsity=curve['sparsity_mean'][-1])
  base = out[backbone][0]
  summary = dict(rounds=base['rounds'], local_steps=base['local_steps'],
                 train_time_s=base['train_time_s'], diverged=False,
                 **_scores_summary(scores))
  return summary, curve
