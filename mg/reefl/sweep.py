"""A sweep of ReeFL and its baselines, each configuration chosen on the validation clients.

  python -m experiments.sweep --config=configs/reefl/mnist_baselines.py \
      --sweep=configs/reefl/sweeps/mnist.py --workdir=DIR

The sweep file has the format of ``mg/sweep/spec.py`` (studies of grids or
member lists over fields, and seeds); here a member may set its method's own
settings ``per_method.<method>.<key>`` or the shared field each defaults to
(``mg.reefl.methods``), and a field that does not reach its method is refused
(e.g. ``fl.lr`` for DepthFL with FedDyn, which runs ``baselines.feddyn_lr``).

Members are trained as single runs are (:func:`mg.reefl.run.train_members`,
first repeat, at the member's seed). With ``--members=vmap`` (``auto`` off
XLA:CPU) the members of one method at one seed, which differ only in traced settings, are
trained together: their server states stacked and every round one vmapped
computation (:func:`mg.federated.tiers.train_members`), evaluations too; with
``loop`` (``auto`` on XLA:CPU) one after another. Either way they share the compiled programs.

A configuration's score is the mean over its seeds of the final accuracy on
the validation clients, mean over exits (``mg.sweep.results.best_per_method``);
the test split's accuracy is recorded beside it, never compared. One regime
per sweep (the best settings of ``full`` and ``frozen`` differ).

Outputs: ``sweep.json`` (every member: settings, seed, validation and test
accuracy per exit and mean, ensemble, train time; the best per method),
``sweep.md`` (the best per method and the config overrides that run it, then
every member), ``members.jsonl`` (one line per finished member) and
``metrics.jsonl``. The workdir is held by the run harness (``mg.harness.session``)
as a run's is: a checkpoint every ``checkpoint_every`` rounds of a member and at
the end of each, SIGINT/SIGTERM saved at a round boundary, and rerunning the same
command resumes where the last checkpoint left off, with ``metrics.jsonl``
rewritten to exactly its records.
"""

from __future__ import annotations

import json
import os
import time
from typing import Sequence

import numpy as np

from mg.federated import tiers
from mg.harness import session as session_lib
from mg.reefl import config as reefl_config
from mg.reefl import methods as reefl_methods
from mg.reefl import run as reefl_run
from mg import report
from mg.report import MetricsLog
from mg.report.serialize import atomic_write_text, to_jsonable
from mg.sweep import results as results_lib
from mg.sweep import spec as spec_lib
from mg.sweep import timing

ROWS_FILE = 'members.jsonl'
# What a fresh sweep in a workdir replaces (with resume=False).
OUTPUTS = ('metrics.jsonl', ROWS_FILE, 'sweep.json', 'sweep.md')


def _cannot_sweep(config):
  if config.data.num_validation_clients < 1:
    return ('a sweep ranks configurations on validation clients, never on the test '
            'split: set --config.data.num_validation_clients to 1 or more')
  if len(config.regimes) != 1:
    return (f'a sweep tunes one regime, not {tuple(config.regimes)}: pass e.g. '
            "--config.regimes='(\"full\",)'")
  return None


FAMILY = spec_lib.Family(shared=reefl_methods.SHARED, settings=reefl_methods.settings,
                         validate=reefl_config.validate, cannot_sweep=_cannot_sweep)


def members(sweep, config) -> tuple[spec_lib.Member, ...]:
  """The checked members of a sweep file's ``get_sweep()`` (``mg.sweep.spec.members``)."""
  reefl_config.validate(config)
  return spec_lib.members(sweep, config, family=FAMILY)


def member_row(result: dict, member: spec_lib.Member, hparams: dict) -> dict:
  """A member's row from its :func:`mg.reefl.run.train_method` result.

  ``validation_accuracy_mean`` and ``accuracy`` (the test split) are the final
  means over exits; None when the member diverged.
  """
  mean = lambda v: float(np.mean(v)) if v else None
  return dict(
      member=member.describe(), method=member.method, hparams=hparams, seed=member.seed,
      diverged=bool(result['diverged']), diverged_round=result['diverged'],
      validation_accuracy_mean=mean(result['validation_exit_accuracy']),
      validation_exit_accuracy=result['validation_exit_accuracy'],
      validation_ensemble_accuracy=result['validation_ensemble_accuracy'],
      accuracy=mean(result['exit_accuracy']), exit_accuracy=result['exit_accuracy'],
      ensemble_accuracy=result['ensemble_accuracy'], train_time_s=result['train_time_s'],
      upload_bytes_per_round=result['upload_bytes_per_round'])


def settings_of(config, member: spec_lib.Member) -> dict:
  """The member's settings as ``per_method`` fields, plus the fields it sets."""
  own = reefl_methods.settings(member.method, spec_lib.member_config(config, member))
  return dict({f'per_method.{member.method}.{k}': v for k, v in own.items()}, **member.values)


class _MemberLog:
  """``metrics.jsonl`` records of one member: the run's records, tagged with the member."""

  def __init__(self, log: MetricsLog, member: spec_lib.Member):
    self.log, self.member = log, member.describe()

  def write(self, method, round_, **fields):
    return self.log.write(method, round_, member=self.member, **fields)


def overrides(method: str, hparams: dict, fields: Sequence[str]) -> dict:
  """``{per_method field: value}`` of ``method``'s settings that the sweep varied."""
  return {f'per_method.{method}.{key}': hparams[f'per_method.{method}.{key}']
          for key, shared in reefl_methods.SHARED[method].items()
          if f'per_method.{method}.{key}' in fields or shared in fields}


def _exits(values) -> str:
  return ' / '.join(report.percent(v) for v in values)


# sweep.md's tables (``mg.report.tables`` columns): a row that diverged reads
# 'diverged' in its metric cells; the member table gives the round as well.
_MEMBERS = (
    ('Member', lambda r, m: r['member'], False),
    ('Validation, mean (%)', lambda r, m: (
        f"diverged (round {r['diverged_round']})" if r['diverged']
        else report.percent(r['validation_accuracy_mean'])), False),
    ('Validation per exit (%)', lambda r, m: _exits(r['validation_exit_accuracy']), True),
    ('Test, mean (%)', lambda r, m: report.percent(r['accuracy']), True),
    ('Test per exit (%)', lambda r, m: _exits(r['exit_accuracy']), True),
    ('Train time (s)', lambda r, m: f"{r['train_time_s']:.0f}", True),
)


def _best_columns(fields: Sequence[str]) -> tuple:
  def settings(b, m):
    if b.get('hparams') is None:
      return 'every configuration diverged'
    return ', '.join(f"{k.rsplit('.', 1)[-1]}={v:g}" for k, v in b['hparams'].items()
                     if k.startswith('per_method.'))
  return (
      ('Method', lambda b, m: report.display_name(b['method']), False),
      ('Configurations', lambda b, m: str(b['tried']), False),
      ('Settings', settings, False),
      ('Seeds', lambda b, m: str(len(b['seeds'])), True),
      ('Validation, mean over exits (%)', lambda b, m: report.percent_pm(
          b['validation_accuracy_mean'], b['validation_accuracy_std']), True),
      ('Test, mean over exits (%)', lambda b, m: report.percent_pm(
          b['accuracy_mean'], b['accuracy_std']), True),
      ('Overrides', lambda b, m: ' '.join(
          f'`--config.{k}={v:g}`' for k, v in overrides(b['method'], b['hparams'],
                                                          fields).items()), True),
  )


def markdown(rows: Sequence[dict], best: dict, title: str, fields: Sequence[str]) -> str:
  """``sweep.md``: the best configuration per method, then every member.

  ``fields``: the swept fields; the overrides that run a best configuration set them.
  """
  tried: dict = {}
  for r in rows:
    tried.setdefault(r['method'], set()).add(results_lib.configuration(r))
  chosen = [dict(best[m], tried=len(c)) if m in best
            else dict(method=m, tried=len(c), diverged=True) for m, c in tried.items()]
  ordered = sorted(rows, key=lambda r: (r['method'], r['diverged'],
                                        -(r['validation_accuracy_mean'] or 0.0)))
  return '\n'.join([
      f'# {title}', '', '## Best configuration per method (chosen on validation)', '',
      report.markdown_table(chosen, _best_columns(fields)), '', '## Every member', '',
      report.markdown_table(ordered, _MEMBERS), '',
      'Accuracy of the global model after the last round, mean over exits; validation: the '
      'validation clients (never trained on), test: the global test split. The best '
      'configuration of a method is the one with the highest mean validation accuracy over '
      'its seeds (mean ± std over seeds); the test accuracy is shown, never used to choose. '
      'Configurations: how many each method tried.']) + '\n'


def write(workdir: str, rows: Sequence[dict], fields: Sequence[str], *, title: str,
          extra: dict) -> tuple[dict, str]:
  """Writes ``sweep.json`` and ``sweep.md``; returns their contents."""
  best = results_lib.best_per_method(rows)
  doc = dict(extra, title=title, fields=list(fields), best=best, rows=list(rows))
  atomic_write_text(os.path.join(workdir, 'sweep.json'),
                    json.dumps(to_jsonable(doc), indent=2, allow_nan=False) + '\n')
  text = markdown(rows, best, title, fields)
  atomic_write_text(os.path.join(workdir, 'sweep.md'), text)
  return doc, text


def write_rows(workdir: str, done: dict) -> None:
  """``members.jsonl``: one line per finished member, rewritten whole."""
  atomic_write_text(os.path.join(workdir, ROWS_FILE),
                    ''.join(json.dumps(row) + '\n' for row in done.values()))


def groups(sweep_members: Sequence[spec_lib.Member], mapping: str) -> list[list[int]]:
  """Indices of the members trained together: one method at one seed (``vmap``), or one each.

  A member sets only its method's settings (``mg.sweep.spec``), so the members
  of a method at a seed differ only in traced values and share one batched
  computation (:func:`mg.reefl.run.train_members`).
  """
  if mapping == 'loop':
    return [[i] for i in range(len(sweep_members))]
  together: dict = {}
  for i, m in enumerate(sweep_members):
    together.setdefault((m.method, m.seed), []).append(i)
  return list(together.values())


def resolve_members(mapping: str, backend: str | None = None) -> str:
  """``--members`` with ``auto`` replaced by the measured choice.

  The clients' rule (:func:`mg.federated.tiers.resolve_mapping`), measured
  again for members: ``auto`` is ``loop`` on XLA:CPU, where 8 batched members
  of the MNIST ViT ran at 0.98-1.07x the loop and compile longer
  (docs/speed.md, "Batched sweeps"), and ``vmap`` elsewhere, where batching
  is what accelerators are for (not measured here: no accelerator was available).
  """
  return tiers.resolve_mapping(mapping, backend)


def seed_data(config, sweep_members: Sequence[spec_lib.Member]) -> dict:
  """``{seed: reefl.run.load_data(...)}`` for every seed of the members, in order."""
  data = {}
  for seed in dict.fromkeys(m.seed for m in sweep_members):
    at_seed = config.copy_and_resolve_references()
    at_seed.seed = seed
    data[seed] = reefl_run.load_data(at_seed)
  return data


def train_group(config, group: Sequence[spec_lib.Member], regime: str, data, *, log, stop,
                resume=None, save=None, programs=None) -> list[dict]:
  """The members of one method at one seed trained together; their result dicts."""
  _, arrays, clients = data
  return reefl_run.train_members(
      [spec_lib.member_config(config, m) for m in group], method=group[0].method,
      regime=regime, repeat=0, data=arrays, clients=clients,
      logs=[_MemberLog(log, m) for m in group], stop=stop, resume=resume, save=save,
      programs=programs)


def run_sweep(config, sweep_members: Sequence[spec_lib.Member], workdir: str, *,
              title: str = 'sweep', programs: dict | None = None,
              members_mapping: str = 'auto') -> dict:
  """Runs every member and writes the report to ``workdir``.

  Args:
    config: the base ReeFL config (what is not swept; one regime).
    sweep_members: from :func:`members`.
    workdir: held for the whole sweep (``mg.harness.session``); rerunning with the
      same config and ``config.resume`` continues from its last checkpoint.
    title: the report's title.
    programs: compiled programs to share (default: this sweep's own).
    members_mapping: ``vmap`` trains a method's members at one seed together
      (:func:`groups`), ``loop`` one after another; ``auto``: :func:`resolve_members`.

  Returns:
    The contents of ``sweep.json``.
  """
  mapping = resolve_members(members_mapping)
  with session_lib.Session(config, workdir, kind='sweep', outputs=OUTPUTS) as session:
    start = time.perf_counter()
    data = seed_data(config, sweep_members)  # every seed's data first
    reefl_run.check_backbone(config)
    session.accept()
    done, current = reefl_run.progress_of(session.restored)
    programs = {} if programs is None else programs
    regime = config.regimes[0]
    for index in groups(sweep_members, mapping):
      group = [sweep_members[j] for j in index if sweep_members[j].describe() not in done]
      if not group:
        continue
      names = [m.describe() for m in group]
      name = ' + '.join(names)
      print(f"[{index[0] + 1}{'' if len(index) == 1 else f'-{index[-1] + 1}'}"
            f"/{len(sweep_members)}] {name}", flush=True)
      resume = current if current is not None and current['name'] == name else None
      results = train_group(config, group, regime, data[group[0].seed], log=session.log,
                            stop=session.stop, resume=resume,
                            save=reefl_run.saver(session, done, name), programs=programs)
      reefl_run.finish(session, done, {
          n: member_row(r, m, settings_of(config, m))
          for n, r, m in zip(names, results, group)})
      write_rows(workdir, done)
    rows = [done[m.describe()] for m in sweep_members]
    write_rows(workdir, done)
    extra = dict(regime=regime, rounds=config.fl.rounds, members=mapping,
                 wall_time_s=time.perf_counter() - start, resumes=session.resumes,
                 partitions={s: reefl_run.describe(d[0], config.data.alpha)
                             for s, d in data.items()})
    doc, text = write(workdir, rows, spec_lib.swept_fields(sweep_members, config),
                      title=title, extra=extra)
  print(text, flush=True)
  print(f'sweep written to {workdir}', flush=True)
  return doc


class _NoLog:
  def write(self, *args, **kwargs):
    del args, kwargs


def bench(config, sweep_members: Sequence[spec_lib.Member], *, repeats: int = 2,
          printer=print) -> dict:
  """The members batched (:func:`groups`, ``vmap``) against one after another, timed.

  Both sides train every member as the sweep does (no workdir, nothing
  written), each with its own compiled programs kept across repetitions;
  :func:`mg.sweep.timing.compare` alternates them and compares the final
  validation and test accuracies per exit.
  """
  reefl_config.validate(config)
  regime = config.regimes[0]
  data = seed_data(config, sweep_members)
  reefl_run.check_backbone(config)

  def side(mapping, programs):
    def train():
      out = [None] * len(sweep_members)
      for index in groups(sweep_members, mapping):
        group = [sweep_members[j] for j in index]
        results = train_group(config, group, regime, data[group[0].seed], log=_NoLog(),
                              stop=None, programs=programs)
        for j, r in zip(index, results):
          out[j] = None if r['diverged'] else np.array(
              r['validation_exit_accuracy'] + r['exit_accuracy'])
      return out
    return train

  return timing.compare(
      side('vmap', {}), side('loop', {}), repeats=repeats,
      what=f'{len(sweep_members)} members x {config.fl.rounds} rounds ({regime})',
      extra=dict(members=len(sweep_members), rounds=config.fl.rounds, regime=regime,
                 methods=sorted({m.method for m in sweep_members})), printer=printer)
