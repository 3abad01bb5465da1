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

import jax
import jax.numpy as jnp
import numpy as np

from mg.data import dirichlet
from mg.harness import checkpoint as checkpoint_lib
from mg.harness import divergence
from mg.harness import session as session_lib
from mg.errors import ConfigError
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
  """``evaluate(params, images, labels) -> {'exit_accuracy': [...], 'ensemble_accuracy'}``.

  ``logits_fn(params, images) -> [logits per exit]``; default ReeFL's ``vit.apply``.
  """
  logits_fn = logits_fn or (lambda params, x: vit.apply(params, x, cfg))

  @jax.jit
  def counts(params, x, y, w):
    logits = jnp.stack(logits_fn(params, x))                       # (E, B, C)
    correct = jnp.sum((jnp.argmax(logits, -1) == y) * w, axis=1)
    ensemble = jnp.sum((jnp.argmax(jnp.sum(logits, 0), -1) == y) * w)
    return correct, ensemble

  def evaluate(params, images, labels):
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
      c, e = counts(params, x, y, jnp.asarray(w))
      total_c = total_c + np.asarray(c, np.float64)
      total_e += float(e)
    return {'exit_accuracy': [float(v) / n for v in total_c], 'ensemble_accuracy': total_e / n}
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


def baseline_options(config, method: str | None = None) -> baselines.Options:
  """The baselines' options; with ``method``, at that method's own settings."""
  b = config.baselines
  options = baselines.Options(
      inclusivefl_beta=b.inclusivefl_beta, feddyn_alpha=b.feddyn_alpha, feddyn_lr=b.feddyn_lr,
      feddyn_min_lr=b.feddyn_min_lr, feddyn_weight_decay=b.feddyn_weight_decay,
      scalefl_widths=tuple(b.scalefl_widths), scalefl_kd_weight=b.scalefl_kd_weight,
      scalefl_temperature=b.scalefl_temperature)
  if method == 'depthfl_feddyn':
    s = reefl_methods.settings(method, config)
    options = options._replace(feddyn_lr=s['lr'], feddyn_min_lr=s['min_lr'])
  elif method == 'scalefl':
    s = reefl_methods.settings(method, config)
    options = options._replace(scalefl_kd_weight=s['kd_weight'],
                               scalefl_temperature=s['temperature'])
  return options


def schedule(config, method: str):
  """``(lr, min_lr, kd_rounds)`` of ``method``'s rounds (its own settings, else shared)."""
  s = reefl_methods.settings(method, config)
  return s['lr'], s['min_lr'], s.get('kd_rounds', config.fl.kd_rounds)


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


def _baseline(config, method, regime, seed, clients, programs, hp: early_exit.Hparams):
  """(alg, state, evaluate, tiers, macs) of a head-based baseline (mg.reefl.algorithms.baselines)."""
  fl = config.fl
  cfg = reefl_config.model_config(config, modulation=False)
  if regime == 'lora':
    cfg = cfg._replace(lora_rank=config.model.lora_rank, lora_alpha=config.model.lora_alpha)
  params = _heads_init(jax.random.PRNGKey(seed), cfg)
  if config.model.init_checkpoint:
    params = pretrained.load_backbone(config.model.init_checkpoint, params, cfg)
  scope = None if programs is None else programs.setdefault('baselines', {})
  alg, spec = baselines.build(method, cfg, regime=regime, batch_size=fl.batch_size,
                              clip=fl.clip, hp=hp, options=baseline_options(config, method),
                              num_clients=len(clients), programs=scope)
  state = alg.init(params)
  key = ('evaluate', method if method in ('inclusivefl', 'scalefl') else 'heads', cfg)
  make = lambda: make_evaluate(cfg, config.data.eval_batch, spec.logits)
  evaluate = make() if programs is None else programs.setdefault(key, make())
  tiers = early_exit.tier_counts(spec.tier_tree, params, state.opt_state, cfg.num_exits, regime)
  for t in tiers:
    t['exit_block'] = cfg.exits[t['tier']]
  scales = None
  if method == 'scalefl':
    scales = tuple(config.baselines.scalefl_widths) or scalefl.default_widths(cfg.num_exits)
  return alg, state, evaluate, tiers, exit_heads.macs_per_exit(cfg, scales)


def evaluation(evaluate, params, test, validation) -> dict:
  """One evaluation: the test split and the validation clients scored alike.

  Returns ``{accuracy, exit_accuracy, ensemble_accuracy}`` on the test split and
  the same keys with ``validation_`` on the validation clients (None without them);
  ``accuracy`` is the mean over exits.
  """
  out = {}
  for prefix, (images, labels) in (('', test), ('validation_', validation)):
    ev = evaluate(params, images, labels) if len(labels) else None
    out[prefix + 'accuracy'] = float(np.mean(ev['exit_accuracy'])) if ev else None
    out[prefix + 'exit_accuracy'] = ev['exit_accuracy'] if ev else None
    out[prefix + 'ensemble_accuracy'] = ev['ensemble_accuracy'] if ev else None
  return out


def client_mapping(config) -> tuple[str, int]:
  """``(mapping, group_size)`` of a round (``fl.mapping`` with ``auto`` resolved; ``fl.group_size``)."""
  fl = config.fl
  group = fl.get('group_size', 0) or tiers_lib.default_group_size(fl.clients_per_round,
                                                                  config.model.num_exits)
  return tiers_lib.resolve_mapping(fl.get('mapping', 'auto')), group


def train_method(config, *, method, regime, repeat, data, clients, log, stop,
                 resume=None, save=None, programs=None):
  """Trains one (regime, method, repeat); returns its result dict."""
  fl = config.fl
  seed = config.seed + 1000 * repeat
  own = reefl_methods.settings(method, config)
  lr, min_lr, kd_rounds = schedule(config, method)
  clients = [c._replace(tier=t) for c, t in zip(clients, baselines.client_tiers(
      method, [c.tier for c in clients], config.model.num_exits))]
  if method in baselines.HEAD_METHODS:
    hp = early_exit.Hparams(rounds=fl.rounds, lr=lr, min_lr=min_lr, kd_rounds=kd_rounds)
    alg, state, evaluate, tiers, macs = _baseline(config, method, regime, seed, clients,
                                                  programs, hp)
    saved = lambda s: (s.params, s.opt_state)
  else:
    kd_mode, modulation = reefl.METHODS['reefl' if method == 'reefl_maximum' else method]
    cfg = reefl_config.model_config(config, modulation)
    if regime == 'lora':
      cfg = cfg._replace(lora_rank=config.model.lora_rank, lora_alpha=config.model.lora_alpha)
    params = initial_params(config, cfg, jax.random.PRNGKey(seed))
    local = reefl.LocalConfig(batch_size=fl.batch_size, clip=fl.clip, ema=fl.ema,
                              temperature=fl.temperature, kd_mode=kd_mode)
    hp = reefl.Hparams(rounds=fl.rounds, lr=lr, min_lr=min_lr, kd_rounds=kd_rounds)
    alg = reefl.reefl(cfg, regime=regime, local=local, hp=hp, name=method,
                      programs=None if programs is None else programs.setdefault(
                          (regime, modulation), {}))
    state = alg.init(params)
    evaluate = (make_evaluate(cfg, config.data.eval_batch) if programs is None else
                programs.setdefault(('evaluate', cfg), make_evaluate(cfg, config.data.eval_batch)))
    tiers = reefl.tier_param_counts(cfg, regime, params)
    macs = vit.macs_per_exit(cfg)
    saved = lambda s: s.params
  tag = f'{method} [{regime}]'
  images, labels, test_images, test_labels, val_images, val_labels = data

  first, curve, teacher, train_time, uploaded, diverged = 1, [], {}, 0.0, [], None
  first_loss = None
  if resume is not None:
    first = resume['round'] + 1
    curve, train_time, uploaded = resume['curve'], resume['train_time'], resume['uploaded']
    first_loss = resume['first_loss']
    teacher = {int(k): np.asarray(v) for k, v in resume['teacher'].items()}
    try:
      restored = checkpoint_lib.restore_like(saved(state), resume['params'], 'params')
    except checkpoint_lib.CheckpointError as e:
      raise checkpoint_lib.CheckpointError(
          f'{e} (checkpoints written before the ViT\'s blocks were stacked hold one set per '
          'block and do not resume: rerun with --config.resume=False)') from e
    state = (state._replace(params=restored[0], opt_state=restored[1])
             if isinstance(restored, tuple) else state._replace(params=restored))
    state = state._replace(round=jnp.int32(resume['round']))

  def snapshot(r):
    return {'round': r, 'curve': curve, 'train_time': train_time, 'uploaded': uploaded,
            'first_loss': first_loss,
            'teacher': {str(k): v.tolist() for k, v in teacher.items()}}

  key = jax.random.PRNGKey(seed + 1)
  mapping, group_size = client_mapping(config)
  with progress(fl.rounds, tag, config.progress) as bar:
    bar.update(first - 1)
    for r in range(first, fl.rounds + 1):
      sampled = baselines.sample_clients(method, seed, r, [c.tier for c in clients],
                                         fl.clients_per_round)
      start = time.perf_counter()
      state, diag = tiers_lib.train_round(alg, state, clients, images, labels, sampled,
                                          jax.random.fold_in(key, r), r, mapping, group_size)
      jax.block_until_ready(state.params)
      train_time += time.perf_counter() - start
      uploaded.append(diag['uploaded'])
      for t, c in diag['teacher'].items():
        teacher[t] = teacher.get(t, 0) + c
      if divergence.diverged(float(diag['loss']), bool(diag['finite']), first_loss):
        diverged = r
        print(f'{tag}: diverged at round {r} of repeat {repeat + 1} (non-finite loss or '
              f'parameters, or a loss above {divergence.LOSS_BOUND:g} x the first '
              "round's): stopped it and marked its results diverged", flush=True)
        log.write(tag if regime != 'full' else method, r, repeat=repeat, regime=regime,
                  event='diverged', stage='training')
        break
      if first_loss is None:
        first_loss = float(diag['loss'])
      record = {'loss': diag['loss'], 'lr': reefl.learning_rate(r, fl.rounds, lr, min_lr),
                'kd_weight': kd_weight(own, r)}
      if r % config.eval_every == 0 or r == fl.rounds:
        point = evaluation(evaluate, alg.output(state), (test_images, test_labels),
                           (val_images, val_labels))
        curve.append({'round': r, **point})
        means = {'accuracy': 'accuracy_mean', 'validation_accuracy': 'validation_accuracy_mean'}
        record.update({means.get(k, k): v for k, v in point.items()})
      log.write(tag if regime != 'full' else method, r, repeat=repeat, regime=regime, **record)
      bar.set_postfix({'loss': diag['loss'], **({'acc': curve[-1]['accuracy']} if curve else {})})
      bar.update(1)
      if save is not None and (r % config.checkpoint_every == 0 or stop) and r < fl.rounds:
        save(saved(state), snapshot(r))
      if stop and r < fl.rounds:  # at the last round: finish, the method is saved as done
        raise checkpoint_lib.Interrupted(stop.signum, f'round {r} of {tag} (repeat {repeat + 1})')

  final = curve[-1] if curve and not diverged else None
  return {
      'method': method, 'regime': regime, 'repeat': repeat, 'diverged': diverged,
      'exit_accuracy': final['exit_accuracy'] if final else None,
      'ensemble_accuracy': final['ensemble_accuracy'] if final else None,
      'validation_exit_accuracy': final['validation_exit_accuracy'] if final else None,
      'validation_ensemble_accuracy': final['validation_ensemble_accuracy'] if final else None,
      'curve': curve, 'train_time_s': train_time, 'rounds': fl.rounds,
      'upload_bytes_per_round': 4.0 * float(np.mean(uploaded)) if uploaded else None,
      'macs_per_exit': macs, 'tiers': tiers,
      'teacher': {str(k): np.asarray(v).tolist() for k, v in sorted(teacher.items())},
  }


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
  """``save(params, snapshot)`` for :func:`train_method`: a checkpoint of unit ``name``."""
  def save(params, snap):
    session.save({'leaves': _numbered(checkpoint_lib.host_leaves(params))},
                 {'done': done, 'current': dict(snap, name=name)},
                 where=f"round {snap['round']} of {name}")
  return save


def finish(session, done: dict, name: str, record: dict) -> dict:
  """Records unit ``name`` as finished and checkpoints; stops there on a signal.

  Returns the record as it reads back from the checkpoint (JSON values).
  """
  done[name] = checkpoint_lib.json_roundtrip(to_jsonable(record))
  session.save({'leaves': {'none': np.zeros(())}}, {'done': done, 'current': None},
               where=f'the end of {name}')
  if session.stop:
    raise checkpoint_lib.Interrupted(session.stop.signum, f'the end of {name}')
  return done[name]


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
          results.append(finish(session, done, name, res))
    wall = time.perf_counter() - start
    return reefl_report.write_outputs(workdir, results, partition=describe(split, config.data.alpha),
                                      wall_time_s=wall, resumes=session.resumes)
