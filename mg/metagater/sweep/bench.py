"""The batched sweep against the same members run one after another.

``python -m experiments.sweep ... --bench`` times, in one process and on the
same data, (a) the batched sweep (``mg.metagater.sweep.runner.run_method``: one compiled
program for all members of a method) and (b) sequential single runs: each
member trained by ``mg.metagater.train.train`` with its method's round and target
functions compiled once and reused by every member (as a user looping over
configurations in one process would run them), with the same evaluations.
The first repetition includes compilation on both sides; later ones reuse
the compiled programs. Repetitions alternate which side goes first, since a
shared machine's load drifts. Both sides' final accuracies are compared.
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Sequence

import jax
import numpy as np

from mg.metagater import methods as methods_lib
from mg.metagater import run as run_lib
from mg.metagater import train as train_lib
from mg.metagater.sweep import program as program_lib
from mg.metagater.sweep import runner as runner_lib
from mg.sweep import spec as spec_lib


def sequential_runs(setup: runner_lib.SweepSetup, members: Sequence[spec_lib.Member],
                    cache: dict) -> list:
  """Each member's final per-target accuracies, trained one after another.

  ``cache`` keeps each method's compiled round and target functions across
  calls (the target functions per adaptation step size, which they bind).
  """
  config = setup.config
  results = []
  for member in members:
    member_config = spec_lib.member_config(config, member)
    method = methods_lib.build(member.method, member_config, setup.info)
    if member.method not in cache:
      cache[member.method] = run_lib.build_runners(
          config, [member.method], setup.info, setup.strategy,
          setup.num_train)[member.method]
    runner = cache[member.method]
    fns_key = (member.method, member_config.adapt.lr)
    if fns_key not in cache:
      cache[fns_key] = train_lib.make_target_fns(method)
    if ('data', member.seed) not in cache:
      cache['data', member.seed] = jax.device_put(setup.feds[member.seed])
    fed = cache['data', member.seed]
    init_key, train_key, eval_key = program_lib.member_keys(member.seed, member.method)
    last = {}

    def evaluate(params, t, method=method, fns=cache[fns_key], fed=fed, key=eval_key,
                 last=last):
      last[t] = train_lib.evaluate_targets(method, fns, params, fed.target_support,
                                           fed.target_query, jax.random.fold_in(key, t))
      return last[t]

    state = method.algorithm.init(method.model.init(init_key), **method.hparams)
    result = train_lib.train(method, state, runner.round_fn, fed.train, train_key,
                             rounds=config.meta.rounds, eval_every=config.eval_every,
                             evaluate=evaluate)
    diverged = result.diverged_round is not None
    results.append(None if diverged else last[config.meta.rounds].accuracy)
  return results


def batched_runs(setup: runner_lib.SweepSetup, members: Sequence[spec_lib.Member],
                 cache: dict) -> list:
  """Each member's final per-target accuracies from the batched sweep.

  ``cache`` keeps each method's compiled sweep program across calls.
  """
  rows = [None] * len(members)
  for name in dict.fromkeys(m.method for m in members):
    index = [i for i, m in enumerate(members) if m.method == name]
    method_rows, _ = runner_lib.run_method(setup, name, [members[i] for i in index],
                                           programs=cache)
    for i, row in zip(index, method_rows):
      rows[i] = row
  return [None if r['diverged'] else np.array(r['target_accuracy']) for r in rows]


def machine() -> str:
  """The machine in words: processor, cores, backend and devices."""
  devices = jax.devices()
  return (f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
          f'{jax.default_backend()} backend, {len(devices)} x {devices[0].device_kind}')


def bench(setup: runner_lib.SweepSetup, members: Sequence[spec_lib.Member], *,
          repeats: int = 2, printer=print) -> dict:
  """Times batched against sequential; prints a table and returns the figures."""
  batched_cache, sequential_cache = {}, {}
  sides = {'batched': lambda: batched_runs(setup, members, batched_cache),
           'sequential': lambda: sequential_runs(setup, members, sequential_cache)}
  times = {name: [] for name in sides}
  last = {}
  for repeat in range(repeats):
    order = list(sides) if repeat % 2 == 0 else list(sides)[::-1]
    for name in order:
      start = time.perf_counter()
      last[name] = sides[name]()
      times[name].append(time.perf_counter() - start)
  diffs = [float(np.max(np.abs(a - b))) for a, b in zip(last['batched'], last['sequential'])
           if a is not None and b is not None]
  same_divergence = all((a is None) == (b is None)
                        for a, b in zip(last['batched'], last['sequential']))
  ratios = [s / b for s, b in zip(times['sequential'], times['batched'])]
  figures = dict(
      members=len(members), methods=sorted({m.method for m in members}),
      rounds=setup.config.meta.rounds, machine=machine(),
      batched_s=times['batched'], sequential_s=times['sequential'],
      speedup=ratios, max_target_accuracy_diff=max(diffs, default=0.0),
      same_divergence=same_divergence)
  printer(f"benchmark: {len(members)} configurations x {setup.config.meta.rounds} rounds "
          f"on {figures['machine']}")
  printer(f"{'repetition':<16}{'batched (s)':>13}{'sequential (s)':>16}{'speedup':>9}")
  for r, (b, s) in enumerate(zip(times['batched'], times['sequential'])):
    label = f"{r + 1} ({'with compile' if r == 0 else 'compiled'})"
    printer(f'{label:<16}{b:>13.1f}{s:>16.1f}{s / b:>8.2f}x')
  printer(f"max |target accuracy difference| batched vs sequential: "
          f"{figures['max_target_accuracy_diff']:.2g}"
          f"{'' if same_divergence else ' (divergence differs!)'}")
  printer(json.dumps(figures))
  return figures
