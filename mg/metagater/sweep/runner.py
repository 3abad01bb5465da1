"""A whole sweep: data per seed, one batched program per method, the report.

``run_sweep(config, members, workdir)`` is what ``python -m experiments.sweep``
calls. It loads the dataset once and for every seed draws the partition a
single run with that seed draws for its first repeat; the seeds' data go to the
devices once, stacked, and every method whose members use the same seeds reads
the same copy. Each method's members are then trained and evaluated together
(``mg.metagater.sweep.program``), and ``mg.metagater.sweep.report`` writes the report.
"""

from __future__ import annotations

import time
from typing import Sequence

import jax
import numpy as np

from mg.metagater import config as config_lib
from mg import data as data_lib
from mg.metagater import methods as methods_lib
from mg import report
from mg.metagater import run as run_lib
from mg.harness import checkpoint as ckpt_lib
from mg.harness import divergence as divergence_lib
from mg.harness import session as session_lib
from mg.metagater.sweep import program as program_lib
from mg.metagater.sweep import report as report_lib
from mg.sweep import results as results_lib
from mg.sweep import spec as spec_lib

# What a fresh sweep in a workdir replaces (with resume=False).
OUTPUTS = ('metrics.jsonl', 'sweep.json', 'sweep.md', 'sweep_losses.png')


class SweepSetup:
  """The data of each seed (host and, lazily, stacked on the devices)."""

  def __init__(self, config, seeds: Sequence[int], devices=None, verbose=True,
               members: str = 'auto'):
    self.config = config
    self.members = program_lib.resolve_member_mapping(
        members, jax.default_backend(), config.model.name)
    self.feds, self.partitions = {}, {}
    dataset = data_lib.load_checked(config.data, check=lambda dataset: (
        config_lib.validate_dataset(config, dataset.labels, dataset.num_classes,
                                    dataset.name)))
    self.info = data_lib.info_of(dataset)
    for seed in dict.fromkeys(seeds):
      partition = data_lib.partition_for(dataset, config.data, seed)
      if verbose:
        print(data_lib.describe(partition), flush=True)
      self.feds[seed] = data_lib.arrays_for(dataset, config.data, partition)
      config_lib.validate_tasks(config, self.feds[seed])
      self.partitions[seed] = partition
    self.devices = list(devices or jax.devices())
    self.shardings = program_lib.shardings(self.devices)
    self.num_train = int(next(iter(self.feds.values())).train.count.shape[0])
    self.strategy = run_lib.client_strategy(config)
    self._stacked = {}

  def data(self, seeds: tuple) -> program_lib.SweepData:
    """The stacked data of ``seeds`` on the devices, shared by every caller."""
    if seeds not in self._stacked:
      stacked = program_lib.stack_data([self.feds[s] for s in seeds])
      self._stacked[seeds] = jax.device_put(stacked, self.shardings.replicated)
    return self._stacked[seeds]


def build_method(config, info, name: str, members: Sequence[spec_lib.Member]):
  """The method (base config) and each member's ``algorithm.init`` kwargs and adapt lr.

  Each member's recorded hyperparameters are the settings its method runs
  with, as ``per_method.<method>.<name>`` fields (what a config sets to run
  that configuration), plus the fields the member sets, as it sets them.
  """
  method = methods_lib.build(name, config, info)
  hparams, lrs, values = [], [], []
  for member in members:
    member_config = spec_lib.member_config(config, member)
    member_method = methods_lib.build(name, member_config, info)
    hparams.append(member_method.hparams)
    lrs.append(member_method.adapt.keywords['lr'])
    settings = methods_lib.settings(name, member_config)
    values.append(dict({f'per_method.{name}.{k}': v for k, v in settings.items()},
                       **member.values))
  return method, hparams, lrs, values


def run_method(setup: SweepSetup, name: str, members: Sequence[spec_lib.Member],
               progress: bool = False, programs: dict | None = None):
  """Trains and evaluates one method's members together.

  ``programs`` (method name -> ``Program``) keeps compiled programs across calls.

  Returns:
    ``(rows, timing)``: one result row per member (in order) and
    ``{'seconds', 'first_round_s', 'members', 'slots'}``.
  """
  config = setup.config
  start = time.perf_counter()
  method, hparams, lrs, values = build_method(config, setup.info, name, members)
  seeds = [m.seed for m in members]
  lay = program_lib.layout(seeds, len(setup.devices))
  programs = {} if programs is None else programs
  if name not in programs:
    programs[name] = program_lib.build_program(
        method, num_train=setup.num_train, tasks_per_round=config.meta.tasks_per_round,
        strategy=setup.strategy, members=setup.members)
  program = programs[name]
  start_members = program_lib.init_members(method, hparams, lrs, seeds, lay,
                                           setup.shardings.members)
  bar = report.progress(config.meta.rounds, f'{name} ({len(members)} members)',
                        enabled=progress)
  marks = {}

  def on_round(t):
    if t == 1:
      marks['first'] = time.perf_counter()
    bar.update(1)

  trace = program_lib.train(program, start_members, setup.data(lay.seeds),
                            rounds=config.meta.rounds, eval_every=config.eval_every,
                            on_round=on_round)
  bar.close()
  seconds = time.perf_counter() - start
  gated = bool(method.model.gated_layers)
  rows = [member_row(trace, lay.first_slot[i], m, values[i], gated)
          for i, m in enumerate(members)]
  timing = dict(seconds=seconds, first_round_s=marks.get('first', start) - start,
                members=len(members), slots=int(lay.slots.size))
  return rows, timing


def divergence(trace: program_lib.Trace, slot) -> tuple:
  """``(round, stage)`` of a member's first divergence, ``(0, None)`` if none.

  The single run's rules (``mg.metagater.train.train``): a non-finite loss or parameter,
  or a loss above ``mg.harness.divergence.LOSS_BOUND`` times the first round's (``'training'``); non-
  finite adapted parameters (``'adaptation'``) or logits (``'evaluation'``) at
  an evaluation round, or either on the validation tasks (``'validation'``).
  """
  g, m = slot
  found = []
  if trace.diverged_round[g, m] > 0:
    found.append((int(trace.diverged_round[g, m]), 'training'))
  losses = trace.losses[:, g, m]
  if np.isfinite(losses[0]):
    above = np.flatnonzero(np.abs(losses) > divergence_lib.LOSS_BOUND
                           * max(abs(float(losses[0])), 1e-12))
    if above.size:
      found.append((int(above[0]) + 1, 'training'))
  for e, t in enumerate(trace.eval_rounds):
    if trace.adapted_finite is not None and not trace.adapted_finite[e, g, m].all():
      found.append((t, 'adaptation'))
    elif trace.logits_finite is not None and not trace.logits_finite[e, g, m].all():
      found.append((t, 'evaluation'))
  if trace.validation_finite is not None and not trace.validation_finite[g, m].all():
    found.append((trace.eval_rounds[-1], 'validation'))
  return min(found, key=lambda round_stage: round_stage[0]) if found else (0, None)


def member_row(trace: program_lib.Trace, slot, member: spec_lib.Member, hparams: dict,
               gated: bool) -> dict:
  """A member's result row from the trace (its slot ``(g, m)``)."""
  g, m = slot
  diverged_round, stage = divergence(trace, slot)
  diverged = diverged_round > 0
  rounds = [t for t in trace.eval_rounds if not diverged or t < diverged_round]
  accuracy = trace.accuracy[:len(rounds), g, m]        # (E', targets)
  sparsity = trace.sparsity[:len(rounds), g, m]
  losses = trace.losses[:, g, m]
  row = dict(method=member.method, hparams=hparams, seed=member.seed,
             diverged=diverged, diverged_round=diverged_round if diverged else None,
             diverged_stage=stage, validation_accuracy_mean=None, validation_accuracy=[],
             validation_sparsity_mean=None,
             accuracy=None, target_accuracy=[], sparsity=None, target_sparsity=None,
             macs_ratio=None,
             curve={'round': rounds, 'accuracy': accuracy.mean(-1).tolist(),
                    'sparsity': sparsity.mean(-1).tolist() if gated else None},
             losses=[report_lib.finite_or_none(x) for x in losses])
  if not diverged:
    validation = trace.validation_accuracy[g, m]
    row.update(validation_accuracy_mean=float(validation.mean()),
               validation_accuracy=validation.tolist(),
               accuracy=float(accuracy[-1].mean()), target_accuracy=accuracy[-1].tolist())
    if gated:
      row.update(validation_sparsity_mean=float(trace.validation_sparsity[g, m].mean()))
    if gated:
      row.update(sparsity=float(sparsity[-1].mean()), target_sparsity=sparsity[-1].tolist(),
                 macs_ratio=float(trace.macs_ratio[len(rounds) - 1, g, m].mean()))
  return row


def run_sweep(config, members: Sequence[spec_lib.Member], workdir: str, *,
              title: str = 'sweep', devices=None, member_mapping: str = 'auto') -> dict:
  """Runs every member of a sweep and writes the report to ``workdir``.

  Args:
    config: the base experiment config (what is not swept).
    members: from ``mg.sweep.spec.members``.
    workdir: folder for ``sweep.json``, ``sweep.md`` and the plots.
    title: the report's title.
    devices: devices to shard the members over (default: all).
    member_mapping: ``'auto'``, ``'vmap'`` or ``'loop'`` (``mg.metagater.sweep.program``).

  Returns:
    The contents of ``sweep.json``.
  """
  with session_lib.Session(config, workdir, kind='sweep', outputs=OUTPUTS) as session:
    setup = SweepSetup(config, [m.seed for m in members], devices, members=member_mapping)
    session.accept()
    return _run_members(setup, members, session, title)


def _run_members(setup: SweepSetup, members, session, title: str) -> dict:
  """Every method's members, then the report (``run_sweep`` holding its workdir).

  A checkpoint after each method holds the finished methods' rows and timings;
  a resumed sweep skips them.
  """
  config, workdir = setup.config, session.workdir
  print(f"backend {jax.default_backend()} ({len(setup.devices)} device(s)), client "
        f"mapping '{setup.strategy}', {len(members)} members ({setup.members})", flush=True)
  done = {} if session.restored is None else dict(session.restored.progress['done'])
  rows = [None] * len(members)
  for name in dict.fromkeys(m.method for m in members):
    index = [i for i, m in enumerate(members) if m.method == name]
    if name not in done:
      method_rows, timing = run_method(setup, name, [members[i] for i in index],
                                       progress=config.progress)
      finished = sum(not r['diverged'] for r in method_rows)
      print(f"{name}: {len(index)} members in {timing['seconds']:.1f} s "
            f"({finished} finished, {len(index) - finished} diverged)", flush=True)
      done[name] = ckpt_lib.json_roundtrip(report.to_jsonable(
          dict(rows=method_rows, timing=timing)))
      session.save({'none': np.zeros(())}, {'done': done}, where=f'the end of {name}')
      if session.stop:
        raise ckpt_lib.Interrupted(session.stop.signum, f'the end of {name}')
    for i, row in zip(index, done[name]['rows']):
      rows[i] = row
  timings = {name: d['timing'] for name, d in done.items()}
  fields = spec_lib.swept_fields(members, config)
  extra = dict(title=title, dataset=setup.info, backend=jax.default_backend(),
               devices=len(setup.devices), rounds=config.meta.rounds,
               eval_every=config.eval_every, timing=timings, resumes=session.resumes,
               partitions={s: p.stats() for s, p in setup.partitions.items()})
  text = report_lib.write(workdir, rows, fields, title=title, extra=extra)
  print(text, flush=True)
  print(f'sweep written to {workdir}', flush=True)
  return dict(extra, fields=list(fields), rows=rows,
              best=results_lib.best_per_method(rows))
