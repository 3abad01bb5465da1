"""MetaGater's batched sweep against the same members run one after another.

``python -m experiments.sweep ... --bench`` times (:mod:`mg.sweep.timing`), in
one process and on the same data, (a) the batched sweep (``mg.metagater.sweep.runner.run_method``: one compiled
program for all members of a method) and (b) sequential single runs: each
member trained by ``mg.metagater.train.train`` with its method's round and target
functions compiled once and reused by every member (as a user looping over
configurations in one process would run them), with the same evaluations.
The first repetition includes compilation on both sides; later ones reuse
the compiled programs. Repetitions alternate which side goes first, since a
shared machine's load drifts. Both sides' final accuracies are compared.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from mg.metagater import methods as methods_lib
from mg.metagater import run as run_lib
from mg.metagater import train as train_lib
from mg.metagater.sweep import program as program_lib
from mg.metagater.sweep import runner as runner_lib
from mg.sweep import spec as spec_lib
from mg.sweep import timing


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


def bench(setup: runner_lib.SweepSetup, members: Sequence[spec_lib.Member], *,
          repeats: int = 2, printer=print) -> dict:
  """Times batched against sequential (:func:`mg.sweep.timing.compare`); returns the figures."""
  batched_cache, sequential_cache = {}, {}
  return timing.compare(
      lambda: batched_runs(setup, members, batched_cache),
      lambda: sequential_runs(setup, members, sequential_cache), repeats=repeats,
      what=f'{len(members)} configurations x {setup.config.meta.rounds} rounds',
      extra=dict(members=len(members), methods=sorted({m.method for m in members}),
                 rounds=setup.config.meta.rounds), printer=printer)
