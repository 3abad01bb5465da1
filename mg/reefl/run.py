"""One ReeFL experiment: every configured regime x method x repeat, then the outputs.

The entry point (``experiments/main.py``) reaches ``run`` through ``mg.systems``
for configs with ``system='reefl'`` (``configs/reefl/*.py``). This module reads the config and
passes explicit arguments to the library (``mg.data.dirichlet``,
``mg.models.vit``, ``mg.reefl.algorithms.reefl``, ``mg.reefl.report``); the paper's
baselines (``mg.reefl.algorithms.baselines``) dispatch in :func:`train_method`,
each at its own settings (``mg.reefl.methods``). Every evaluation scores the
global model on the validation clients (``data.num_validation_clients``, never
trained on) exactly as on the test split; only validation accuracy may choose
settings (``mg.reefl.sweep``), the test split is reported.

Long runs go through the run harness both systems share (``mg.harness.session``):
a checkpoint every ``checkpoint_every`` rounds and at the end of each (regime,
method, repeat), and on SIGINT/SIGTERM; rerunning the same command with the
same ``--workdir`` resumes, with ``metrics.jsonl`` rewritten to exactly the
checkpointed rounds. Client sampling and keys are functions of (seed, repeat,
round), so a resumed run equals an uninterrupted one. A round whose loss or
parameters are not finite, or whose loss exceeds the harness's bound
(``mg.harness.divergence``), stops the method and marks it diverged.
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mg.data import dirichlet
from mg.harness import checkpoint as checkpoint_lib
from mg.harness import divergence
from mg.harness import session as session_lib
from mg.errors import ConfigError
from mg.federated import sharding
from mg.federated import tiers as tiers_lib
from mg.models import exit_heads, pretrained, vit
from mg.reefl import config as reefl_config
from mg.reefl import methods as reefl_methods
from mg.reefl import report as reefl_report
from mg.reefl.algorithms import baselines, early_exit, reefl, scalefl
from mg.report import progress
from mg.report.serialize import to_jsonable


# ------------------------------------------------------------------ evaluation


def make_evaluate(cfg: vit.ViTConfig, batch: int, logits_fn=None):
  """``evaluate(params, images, labels, members=0)``: accuracy per exit and of the ensemble.

  Returns ``{'exit_accuracy': [...], 'ensemble_accuracy'}``; with ``members``
  = M > 0, ``params`` are M members' stacked on a leading axis, scored in one
  vmapped program, and the result is a list of M such dicts.
  ``logits_fn(params, images) -> [logits per exit]``; default ReeFL's ``vit.apply``.
  """
  logits_fn = logits_fn or (lambda params, x: vit.apply(params, x, cfg))

  def counts(params, x, y, w):
    logits = jnp.stack(logits_fn(params, x))                       # (E, B, C)
    correct = jnp.sum((jnp.argmax(logits, -1) == y) * w, axis=1)
    ensemble = jnp.sum((jnp.argmax(jnp.sum(logits, 0), -1) == y) * w)
    return correct, ensemble

  programs = {False: jax.jit(counts),
              True: jax.jit(jax.vmap(counts, in_axes=(0, None, None, None)))}

  def evaluate(params, images, labels, members: int = 0):
    n = len(labels)
    total_c, total_e = 0.0, 0.0
    for start in range(0, n, batch):
      x, y = images[start:start + batch], labels[start:start + batch]
      w = np.ones(len(y), np.float32)
      if len(y) < batch:  # pad the last batch (fixed shapes: one program)
        pad = batch - len(y)
        x = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)])
        y = jnp.concatenate([y, jnp.zeros((pad,), y.dtype)])
        w = np.concatenate([w, np.zeros(pad, np.float32)])
      c, e = programs[members > 0](params, x, y, jnp.asarray(w))
      total_c = total_c + np.asarray(c, np.float64)
      total_e = total_e + np.asarray(e, np.float64)
    score = lambda c, e: {'exit_accuracy': [float(v) / n for v in c],
                          'ensemble_accuracy': float(e) / n}
    if members:
      return [score(total_c[m], total_e[m]) for m in range(members)]
    return score(total_c, total_e)
  return evaluate


# ----------------------------------------------------------------------- run


_init = jax.jit(vit.init, static_argnums=1)
_heads_init = jax.jit(exit_heads.init, static_argnums=1)  # one program, not one per op


def _numbered(leaves: list) -> dict:
  """Leaves under zero-padded names: their order survives a checkpoint."""
  return {f'{i:05d}': x for i, x in enumerate(leaves)}


def _clients(split: dirichlet.ClientSplit, num_exits: int) -> list[reefl.ClientData]:
  n_max = max(len(c) for c in split.clients)
  out = []
  for i, idx in enumerate(split.clients):
    padded = np.zeros(n_max, np.int32)
    padded[:len(idx)] = idx
    out.append(reefl.ClientData(jnp.asarray(padded), jnp.int32(len(idx)), i % num_exits, i))
  return out


def load_data(config):
  """``(split, data, clients)`` of ``config.data`` at ``config.seed``.

  ``data`` = (training images, labels, test images, labels, validation images,
  labels) on the device; ``clients`` the training clients (``reefl.ClientData``).
  Raises ``ConfigError`` for a ``fl.batch_size`` larger than every client.
  """
  d = config.data
  split = dirichlet.client_split(
      name=d.name, source=d.source, folder=d.dir, split=d.split, test=d.test,
      test_fraction=d.test_fraction, num_clients=d.num_clients, alpha=d.alpha,
      seed=config.seed, num_validation_clients=d.num_validation_clients)
  reefl_config.check_clients(config, split)
  data = tuple(jnp.asarray(a) for a in (split.train_images, split.train_labels,
                                        split.test_images, split.test_labels,
                                        *split.validation_set()))
  return split, data, _clients(split, config.model.num_exits)


def describe(split: dirichlet.ClientSplit, alpha: float) -> dict:
  """The partition's figures for ``results.json`` (``clients``: the training clients)."""
  sizes = np.array([len(c) for c in split.clients])
  return {'clients': len(split.clients), 'alpha': float(alpha),
          'validation_clients': len(split.validation),
          'train_images': int(sizes.sum()),
          'validation_images': int(sum(len(c) for c in split.validation)),
          'test_images': int(len(split.test_labels)),
          'client_size_min': int(sizes.min()), 'client_size_max': int(sizes.max()),
          'classes_per_client_mean': float(np.mean(
              [len(np.unique(split.train_labels[c])) for c in split.clients]))}


def initial_params(config, cfg: vit.ViTConfig, key):
  params = _init(key, cfg)
  if config.model.init_checkpoint:
    params = pretrained.load_backbone(config.model.init_checkpoint, params, cfg)
  return params


def baseline_options(config, method: str | None = None,
                     settings: dict | None = None) -> baselines.Options:
  """The baselines' options; with ``method``, at that method's own settings.

  ``settings``: the method's settings (default ``mg.reefl.methods.settings``;
  a batched sweep passes its members' traced values).
  """
  b = config.baselines
  options = baselines.Options(
      inclusivefl_beta=b.inclusivefl_beta, feddyn_alpha=b.feddyn_alpha, feddyn_lr=b.feddyn_lr,
      feddyn_min_lr=b.feddyn_min_lr, feddyn_weight_decay=b.feddyn_weight_decay,
      scalefl_widths=tuple(b.scalefl_widths), scalefl_kd_weight=b.scalefl_kd_weight,
      scalefl_temperature=b.scalefl_temperature)
  if method in ('depthfl_feddyn', 'scalefl'):
    s = reefl_methods.settings(method, config) if settings is None else settings
    if method == 'depthfl_feddyn':
      options = options._replace(feddyn_lr=s['lr'], feddyn_min_lr=s['min_lr'])
    else:
      options = options._replace(scalefl_kd_weight=s['kd_weight'],
                                 scalefl_temperature=s['temperature'])
  return options


def kd_weight(s: dict, round_: int) -> float:
  """The weight a method gives its KD term at ``round_`` (logged as ``kd_weight``).

  ``s``: the method's settings (``mg.reefl.methods.settings``). ScaleFL's
  constant weight, the ramp ``w(r)`` where a ramp weighs the KD term (the
  methods with ``kd_rounds``), 0 where nothing is distilled.
  """
  if 'kd_weight' in s:
    return float(s['kd_weight'])
  if 'kd_rounds' in s:
    return reefl.kd_weight(round_, s['kd_rounds'])
  return 0.0


class Unit(NamedTuple):
  """What one (method, regime, seed) trains, before any setting is chosen.

  ``algorithm_of(settings)``: the method's algorithm at its settings
  (``mg.reefl.methods.settings``: numbers, or a batched sweep's traced
  values); ``state``: its initial server state (the same at every setting);
  ``saved(state)``: what a checkpoint keeps of a state.
  """
  algorithm_of: Callable
  state: Any
  evaluate: Callable
  tiers: list
  macs: list
  saved: Callable


def _shared(programs: dict | None, key, make: Callable):
  """``programs[key]``, made by ``make()`` the first time (always made without ``programs``)."""
  if programs is None:
    return make()
  if key not in programs:
    programs[key] = make()
  return programs[key]


def _unit(config, method: str, regime: str, seed: int, num_clients: int,
          programs: dict | None) -> Unit:
  fl = config.fl
  lora = lambda cfg: (cfg._replace(lora_rank=config.model.lora_rank,
                                   lora_alpha=config.model.lora_alpha)
                      if regime == 'lora' else cfg)
  if method in baselines.HEAD_METHODS:
    cfg = lora(reefl_config.model_config(config, modulation=False))
    params = _heads_init(jax.random.PRNGKey(seed), cfg)
    if config.model.init_checkpoint:
      params = pretrained.load_backbone(config.model.init_checkpoint, params, cfg)
    scope = None if programs is None else programs.setdefault('baselines', {})

    def build(s):
      hp = early_exit.Hparams(rounds=fl.rounds, lr=s['lr'], min_lr=s['min_lr'],
                              kd_rounds=s.get('kd_rounds', fl.kd_rounds))
      return baselines.build(method, cfg, regime=regime, batch_size=fl.batch_size,
                             clip=fl.clip, hp=hp, options=baseline_options(config, method, s),
                             num_clients=num_clients, programs=scope)

    alg, spec = build(reefl_methods.settings(method, config))
    state = alg.init(params)
    key = ('evaluate', method if method in ('inclusivefl', 'scalefl') else 'heads', cfg)
    evaluate = _shared(programs, key,
                       lambda: make_evaluate(cfg, config.data.eval_batch, spec.logits))
    tiers = early_exit.tier_counts(spec.tier_tree, params, state.opt_state, cfg.num_exits,
                                   regime)
    for t in tiers:
      t['exit_block'] = cfg.exits[t['tier']]
    scales = None
    if method == 'scalefl':
      scales = tuple(config.baselines.scalefl_widths) or scalefl.default_widths(cfg.num_exits)
    return Unit(lambda s: build(s)[0], state, evaluate, tiers,
                exit_heads.macs_per_exit(cfg, scales), lambda s: (s.params, s.opt_state))
  kd_mode, modulation = reefl.METHODS['reefl' if method == 'reefl_maximum' else method]
  cfg = lora(reefl_config.model_config(config, modulation))
  params = initial_params(config, cfg, jax.random.PRNGKey(seed))
  local = reefl.LocalConfig(batch_size=fl.batch_size, clip=fl.clip, ema=fl.ema,
                            temperature=fl.temperature, kd_mode=kd_mode)
  scope = None if programs is None else programs.setdefault((regime, modulation), {})

  def build(s):
    hp = reefl.Hparams(rounds=fl.rounds, lr=s['lr'], min_lr=s['min_lr'],
                       kd_rounds=s.get('kd_rounds', fl.kd_rounds))
    return reefl.reefl(cfg, regime=regime, local=local, hp=hp, name=method, programs=scope)

  state = build(reefl_methods.settings(method, config)).init(params)
  evaluate = _shared(programs, ('evaluate', cfg),
                     lambda: make_evaluate(cfg, config.data.eval_batch))
  return Unit(build, state, evaluate, reefl.tier_param_counts(cfg, regime, params),
              vit.macs_per_exit(cfg), lambda s: s.params)


def evaluation(evaluate, params, test, validation, members: int = 0):
  """One evaluation: the test split and the validation clients scored alike.

  Returns ``{accuracy, exit_accuracy, ensemble_accuracy}`` on the test split and
  the same keys with ``validation_`` on the validation clients (None without them);
  ``accuracy`` is the mean over exits. ``members`` = M > 0: ``params`` stacked
  over M members, scored together; a list of M such dicts.
  """
  out = [{} for _ in range(max(members, 1))]
  for prefix, (images, labels) in (('', test), ('validation_', validation)):
    ev = evaluate(params, images, labels, members) if len(labels) else None
    for m, o in enumerate(out):
      e = (ev[m] if members else ev) if ev else None
      o[prefix + 'accuracy'] = float(np.mean(e['exit_accuracy'])) if e else None
      o[prefix + 'exit_accuracy'] = e['exit_accuracy'] if e else None
      o[prefix + 'ensemble_accuracy'] = e['ensemble_accuracy'] if e else None
  return out if members else out[0]


def client_mapping(config) -> tuple[str, int, object]:
  """``(mapping, group_size, mesh)`` of a round.

  ``fl.mapping`` with ``auto`` resolved, ``fl.group_size``, and the ``clients``
  mesh a ``vmap`` round shards its chunks over (``fl.shard_clients``; None on
  one device or with the loop).
  """
  fl = config.fl
  group = fl.group_size or tiers_lib.default_group_size(fl.clients_per_round,
                                                                  config.model.num_exits)
  mapping = tiers_lib.resolve_mapping(fl.mapping)
  mesh = sharding.round_mesh(fl.shard_clients) if mapping == 'vmap' else None
  return mapping, group, mesh


def train_method(config, *, method, regime, repeat, data, clients, log, stop,
                 resume=None, save=None, programs=None):
  """Trains one (regime, method, repeat); returns its result dict (:func:`train_members`)."""
  return train_members([config], method=method, regime=regime, repeat=repeat, data=data,
                       clients=clients, logs=[log], stop=stop, resume=resume, save=save,
                       programs=programs)[0]


def train_members(configs: Sequence, *, method, regime, repeat, data, clients, logs, stop,
                  resume=None, save=None, programs=None) -> list[dict]:
  """Trains one (regime, method, repeat) at each config's settings; one result dict each.

  One config is a single run. Several (a batched sweep's members) must
  differ only in ``method``'s settings (``mg.reefl.methods.SHARED``): they
  share the data, clients, sampling and keys, their server states are
  stacked, and every round runs them as one vmapped computation
  (:func:`mg.federated.tiers.train_members`). Each member keeps its own
  divergence rule, records (``logs[m]``) and evaluations; a diverged member
  is recorded at its round and the others go on. ``train_time_s`` is the
  members' shared training time.
  """
  config = configs[0]
  fl = config.fl
  size = len(configs)
  seed = config.seed + 1000 * repeat
  own = [reefl_methods.settings(method, c) for c in configs]
  clients = [c._replace(tier=t) for c, t in zip(clients, baselines.client_tiers(
      method, [c.tier for c in clients], config.model.num_exits))]
  unit = _unit(config, method, regime, seed, len(clients), programs)
  alg = unit.algorithm_of(own[0])
  state = unit.state
  if size > 1:
    state = jax.tree.map(lambda x: jnp.stack([x] * size), state)
    values = {k: np.asarray([s[k] for s in own], np.float32) for k in own[0]}
  tag = f'{method} [{regime}]'
  name = tag if regime != 'full' else method
  images, labels, test_images, test_labels, val_images, val_labels = data

  first, train_time = 1, 0.0
  runs = [{'curve': [], 'teacher': {}, 'uploaded': [], 'first_loss': None, 'diverged': None}
          for _ in configs]
  if resume is not None:
    first, train_time = resume['round'] + 1, resume['train_time']
    saved_runs = resume.get('members') or [  # a single run's, as written before members
        dict({k: resume[k] for k in ('curve', 'uploaded', 'first_loss', 'teacher')},
             diverged=None)]
    runs = [dict(m, teacher={int(k): np.asarray(v) for k, v in m['teacher'].items()})
            for m in saved_runs]
    try:
      restored = checkpoint_lib.restore_like(unit.saved(state), resume['params'], 'params')
    except checkpoint_lib.CheckpointError as e:
      raise checkpoint_lib.CheckpointError(
          f'{e} (checkpoints written before the ViT\'s blocks were stacked hold one set per '
          'block, and those before sweeps were batched another layout; they do not resume: '
          'rerun with --config.resume=False)') from e
    state = (state._replace(params=restored[0], opt_state=restored[1])
             if isinstance(restored, tuple) else state._replace(params=restored))
    state = state._replace(round=jnp.full_like(state.round, resume['round']))

  def snapshot(r):
    return {'round': r, 'train_time': train_time, 'members': [
        dict(m, teacher={str(k): np.asarray(v).tolist() for k, v in m['teacher'].items()})
        for m in runs]}

  key = jax.random.PRNGKey(seed + 1)
  mapping, group_size, mesh = client_mapping(config)
  if mesh is not None:  # a replica on every device
    images, labels = sharding.place((images, labels), mesh)
  label = tag if size == 1 else f'{tag} ({size} members)'
  with progress(fl.rounds, label, config.progress) as bar:
    bar.update(first - 1)
    for r in range(first, fl.rounds + 1):
      sampled = baselines.sample_clients(method, seed, r, [c.tier for c in clients],
                                         fl.clients_per_round)
      start = time.perf_counter()
      round_key = jax.random.fold_in(key, r)
      if size == 1:
        state, diag = tiers_lib.train_round(alg, state, clients, images, labels, sampled,
                                            round_key, r, mapping, group_size, mesh)
        diags = [diag]
      else:
        state, diags = tiers_lib.train_members(unit.algorithm_of, state, values, clients, images,
                                               labels, sampled, round_key, r, mapping,
                                               group_size, mesh)
      jax.block_until_ready(state.params)
      train_time += time.perf_counter() - start
      points = []  # every member's evaluation, once one that has not diverged needs it

      def point(m):
        if not points:
          test, val = (test_images, test_labels), (val_images, val_labels)
          points.extend([evaluation(unit.evaluate, alg.output(state), test, val)] if size == 1
                        else evaluation(unit.evaluate, jax.vmap(alg.output)(state), test, val,
                                        size))
        return points[m]

      for m, (run_, diag) in enumerate(zip(runs, diags)):
        if run_['diverged']:
          continue
        run_['uploaded'].append(diag['uploaded'])
        for t, c in diag['teacher'].items():
          run_['teacher'][t] = run_['teacher'].get(t, 0) + c
        if divergence.diverged(float(diag['loss']), bool(diag['finite']), run_['first_loss']):
          run_['diverged'] = r
          who = tag if size == 1 else f'{tag}, member {m + 1} of {size}'
          print(f'{who}: diverged at round {r} of repeat {repeat + 1} (non-finite loss or '
                f'parameters, or a loss above {divergence.LOSS_BOUND:g} x the first '
                "round's): stopped it and marked its results diverged", flush=True)
          logs[m].write(name, r, repeat=repeat, regime=regime, event='diverged',
                        stage='training')
          continue
        if run_['first_loss'] is None:
          run_['first_loss'] = float(diag['loss'])
        record = {'loss': diag['loss'],
                  'lr': reefl.learning_rate(r, fl.rounds, own[m]['lr'], own[m]['min_lr']),
                  'kd_weight': kd_weight(own[m], r)}
        if r % config.eval_every == 0 or r == fl.rounds:
          run_['curve'].append({'round': r, **point(m)})
          means = {'accuracy': 'accuracy_mean', 'validation_accuracy': 'validation_accuracy_mean'}
          record.update({means.get(k, k): v for k, v in point(m).items()})
        logs[m].write(name, r, repeat=repeat, regime=regime, **record)
      alive = [(run_, d) for run_, d in zip(runs, diags) if not run_['diverged']]
      if not alive:
        break
      curve = alive[0][0]['curve']
      bar.set_postfix({'loss': alive[0][1]['loss'],
                       **({'acc': curve[-1]['accuracy']} if curve else {})})
      bar.update(1)
      if save is not None and (r % config.checkpoint_every == 0 or stop) and r < fl.rounds:
        save(unit.saved(state), snapshot(r))
      if stop and r < fl.rounds:  # at the last round: finish, the method is saved as done
        raise checkpoint_lib.Interrupted(stop.signum, f'round {r} of {tag} (repeat {repeat + 1})')

  results = []
  for run_ in runs:
    final = run_['curve'][-1] if run_['curve'] and not run_['diverged'] else None
    pick = lambda k: final[k] if final else None
    results.append({
        'method': method, 'regime': regime, 'repeat': repeat, 'diverged': run_['diverged'],
        'exit_accuracy': pick('exit_accuracy'), 'ensemble_accuracy': pick('ensemble_accuracy'),
        'validation_exit_accuracy': pick('validation_exit_accuracy'),
        'validation_ensemble_accuracy': pick('validation_ensemble_accuracy'),
        'curve': run_['curve'], 'train_time_s': train_time, 'rounds': fl.rounds,
        'upload_bytes_per_round': (4.0 * float(np.mean(run_['uploaded']))
                                   if run_['uploaded'] else None),
        'macs_per_exit': unit.macs, 'tiers': unit.tiers,
        'teacher': {str(k): np.asarray(v).tolist() for k, v in sorted(run_['teacher'].items())},
    })
  return results


def progress_of(restored) -> tuple[dict, dict | None]:
  """``(done, current)`` of a checkpoint (``({}, None)`` for none).

  ``done``: ``{name: record}`` of the finished units (a run's (regime, method,
  repeat), a sweep's members); ``current``: the snapshot of the unit in
  training, its parameters' leaves under ``params``, or None.
  """
  if restored is None:
    return {}, None
  current = restored.progress.get('current')
  if current is not None:
    saved = restored.arrays['leaves']
    current = dict(current, params=[saved[k] for k in sorted(saved)])
  return dict(restored.progress['done']), current


def saver(session, done: dict, name: str):
  """``save(params, snapshot)`` for :func:`train_members`: a checkpoint of unit ``name``."""
  def save(params, snap):
    session.save({'leaves': _numbered(checkpoint_lib.host_leaves(params))},
                 {'done': done, 'current': dict(snap, name=name)},
                 where=f"round {snap['round']} of {name}")
  return save


def finish(session, done: dict, records: dict) -> dict:
  """Records units ``{name: record}`` as finished and checkpoints; stops there on a signal.

  Returns the records as they read back from the checkpoint (JSON values).
  """
  for name, record in records.items():
    done[name] = checkpoint_lib.json_roundtrip(to_jsonable(record))
  where = f"the end of {' and '.join(records)}"
  session.save({'leaves': {'none': np.zeros(())}}, {'done': done, 'current': None}, where=where)
  if session.stop:
    raise checkpoint_lib.Interrupted(session.stop.signum, where)
  return {name: done[name] for name in records}


# What a fresh run in a workdir replaces (with resume=False).
OUTPUTS = ('metrics.jsonl', 'results.json', 'results.md', 'curves.png', 'exits.png',
           'teacher.png')


def check_backbone(config) -> None:
  """Reads ``model.init_checkpoint`` into the model once, before the workdir is touched.

  Raises:
    ConfigError: the file holds no backbone for this model, with the reason.
  """
  if config.model.init_checkpoint:
    try:
      initial_params(config, reefl_config.model_config(config), jax.random.PRNGKey(config.seed))
    except pretrained.BackboneError as e:
      raise ConfigError(f'model.init_checkpoint: {e}') from e


def run(config, workdir: str, programs: dict | None = None) -> dict:
  """Runs every (regime, method, repeat) of ``config``; writes the outputs to ``workdir``.

  ``programs``: compiled local-training programs and evaluations to share (default:
  this run's own; methods with one model share them either way).

  The workdir is held by the run harness (``mg.harness.session``) as for every
  run: its config of record compared field by field, ``config.json`` written
  and the old outputs cleared (``resume=False``) only once the data and the
  backbone have loaded, ``metrics.jsonl`` rewritten on resume to the
  checkpointed rounds.
  """
  reefl_config.validate(config)
  programs = {} if programs is None else programs
  with session_lib.Session(config, workdir, kind='run', outputs=OUTPUTS) as session:
    start = time.perf_counter()
    split, data, clients = load_data(config)
    check_backbone(config)
    session.accept()
    done, current = progress_of(session.restored)
    results = []
    for regime in config.regimes:
      for method in config.methods:
        for repeat in range(config.repeats):
          name = f'{regime}/{method}/{repeat}'
          if name in done:
            results.append(done[name])
            continue
          resume = current if current is not None and current['name'] == name else None
          res = train_method(config, method=method, regime=regime, repeat=repeat, data=data,
                             clients=clients, log=session.log, stop=session.stop,
                             resume=resume, save=saver(session, done, name),
                             programs=programs)
          results.append(finish(session, done, {name: res})[name])
    wall = time.perf_counter() - start
    return reefl_report.write_outputs(workdir, results, partition=describe(split, config.data.alpha),
                                      wall_time_s=wall, resumes=session.resumes)
