"""One ReeFL experiment: every configured regime x method x repeat, then the outputs.

The entry point (``experiments/main.py``) dispatches here for configs with
``system='reefl'`` (``configs/reefl_*.py``). This module reads the config and
passes explicit arguments to the library (``mg.data.dirichlet``,
``mg.models.vit``, ``mg.algorithms.reefl``, ``mg.reefl_report``); the paper's
baselines (``mg.algorithms.baselines``) dispatch in :func:`train_method`,
each at its own settings (``mg.reefl_methods``). Every evaluation scores the
global model on the validation clients (``data.num_validation_clients``, never
trained on) exactly as on the test split; only validation accuracy may choose
settings (``mg.reefl_sweep``), the test split is reported.

Long runs: a checkpoint (``mg.checkpoint.Store``) every ``checkpoint_every``
rounds and at the end of each (regime, method, repeat), and on SIGINT/SIGTERM;
rerunning the same command with the same ``--workdir`` resumes. Client
sampling and keys are functions of (seed, repeat, round), so a resumed run
equals an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np

from mg import checkpoint as checkpoint_lib
from mg import reefl_methods
from mg import reefl_report
from mg import workdir as workdir_lib
from mg.algorithms import baselines, early_exit, reefl, scalefl
from mg.config import ConfigError
from mg.data import dirichlet
from mg.models import exit_heads, vit
from mg.report import MetricsLog, progress
from mg.report.serialize import atomic_write_text, to_jsonable


def model_config(config, modulation: bool = True) -> vit.ViTConfig:
  m = config.model
  from mg.data.specs import SPECS  # pylint: disable=g-import-not-at-top
  spec = SPECS[config.data.name]
  return vit.ViTConfig(
      image_size=m.image_size, patch_size=m.patch_size, in_chans=m.in_chans or spec.input_shape[2],
      dim=m.dim, depth=m.depth, heads=m.heads, num_exits=m.num_exits,
      num_classes=spec.num_classes, mlp_ratio=m.mlp_ratio, modulation=modulation,
      raw_history=m.raw_history, ree_heads=m.ree_heads, ree_attn_dim=m.ree_attn_dim,
      ree_mlp_ratio=m.ree_mlp_ratio, ree_max_tokens=m.ree_max_tokens, init_std=m.init_std)


def validate(config) -> None:
  """Raises ``ConfigError`` for a ReeFL config that cannot run."""
  def check(ok, message):
    if not ok:
      raise ConfigError(message)
  for m in config.methods:
    check(m in reefl.METHODS or m in baselines.METHODS, f'methods: unknown method {m!r}; '
          f'expected some of {tuple(reefl.METHODS) + baselines.METHODS}')
  for r in config.regimes:
    check(r in reefl.REGIMES, f'regimes: unknown regime {r!r}; expected some of {reefl.REGIMES}')
  check(len(config.methods) > 0 and len(config.regimes) > 0, 'methods and regimes must be non-empty')
  m = config.model
  check(m.depth % m.num_exits == 0, f'model.depth={m.depth} is not a multiple of '
        f'model.num_exits={m.num_exits}')
  check(m.image_size % m.patch_size == 0, f'model.image_size={m.image_size} is not a '
        f'multiple of model.patch_size={m.patch_size}')
  check(m.dim % m.heads == 0, f'model.dim={m.dim} is not a multiple of model.heads={m.heads}')
  check(m.ree_attn_dim % m.ree_heads == 0, 'model.ree_attn_dim must be a multiple of ree_heads')
  check('lora' not in config.regimes or m.lora_rank > 0,
        "regimes has 'lora' but model.lora_rank=0")
  fl = config.fl
  d = config.data
  check(isinstance(d.num_validation_clients, int)
        and 0 <= d.num_validation_clients < d.num_clients,
        f'data.num_validation_clients={d.num_validation_clients!r}: expected an integer in '
        f'0..data.num_clients-1 ({d.num_clients - 1})')
  training = d.num_clients - d.num_validation_clients
  check(0 < fl.clients_per_round <= training,
        f'fl.clients_per_round={fl.clients_per_round}: expected 1..{training} (the '
        'training clients: data.num_clients - data.num_validation_clients)')
  for field in ('rounds', 'batch_size'):
    check(isinstance(fl[field], int) and fl[field] > 0, f'fl.{field}: expected an integer > 0')
  check(fl.kd_rounds > 0 and fl.lr > 0, 'fl.kd_rounds and fl.lr must be > 0')
  check(config.repeats > 0 and config.eval_every > 0, 'repeats and eval_every must be > 0')
  for method in config.methods:
    for key, value in reefl_methods.settings(method, config).items():
      field = ' or '.join(reefl_methods.reads(method, key))
      check(value > 0, f'{field}={value!r}: {method} needs a {key} > 0')
  check(config.data.test in ('official', 'holdout'), "data.test: expected 'official' or 'holdout'")
  check(not m.init_checkpoint or os.path.isfile(m.init_checkpoint),
        f'model.init_checkpoint={m.init_checkpoint!r} is not a file (a .pth state dict, or '
        'an .npz from python -m experiments.pretrain)')
  from mg.data.specs import SPECS  # pylint: disable=g-import-not-at-top
  check(config.data.name in SPECS, f'data.name={config.data.name!r}: expected one of {tuple(SPECS)}')
  check(SPECS[config.data.name].input_shape[0] <= m.image_size,
        f'model.image_size={m.image_size} is smaller than the {config.data.name} images '
        f'({SPECS[config.data.name].input_shape[0]} pixels; they are only ever upsampled)')


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
  """
  d = config.data
  split = dirichlet.client_split(
      name=d.name, source=d.source, folder=d.dir, split=d.split, test=d.test,
      test_fraction=d.test_fraction, num_clients=d.num_clients, alpha=d.alpha,
      seed=config.seed, num_validation_clients=d.num_validation_clients)
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
    from mg.models import pretrained  # pylint: disable=g-import-not-at-top
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

  ``s``: the method's settings (``mg.reefl_methods.settings``). ScaleFL's
  constant weight, the ramp ``w(r)`` where a ramp weighs the KD term (the
  methods with ``kd_rounds``), 0 where nothing is distilled.
  """
  if 'kd_weight' in s:
    return float(s['kd_weight'])
  if 'kd_rounds' in s:
    return reefl.kd_weight(round_, s['kd_rounds'])
  return 0.0


def _baseline(config, method, regime, seed, clients, programs, hp: early_exit.Hparams):
  """(alg, state, evaluate, tiers, macs) of a head-based baseline (mg.algorithms.baselines)."""
  fl = config.fl
  cfg = model_config(config, modulation=False)
  if regime == 'lora':
    cfg = cfg._replace(lora_rank=config.model.lora_rank, lora_alpha=config.model.lora_alpha)
  params = _heads_init(jax.random.PRNGKey(seed), cfg)
  if config.model.init_checkpoint:
    from mg.models import pretrained  # pylint: disable=g-import-not-at-top
    params = pretrained.load_backbone(config.model.init_checkpoint, params, cfg)
  scope = None if programs is None else programs.setdefault('baselines', {})
  alg, spec = baselines.build(method, cfg, params, regime=regime, batch_size=fl.batch_size,
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
    cfg = model_config(config, modulation)
    if regime == 'lora':
      cfg = cfg._replace(lora_rank=config.model.lora_rank, lora_alpha=config.model.lora_alpha)
    params = initial_params(config, cfg, jax.random.PRNGKey(seed))
    local = reefl.LocalConfig(batch_size=fl.batch_size, clip=fl.clip, ema=fl.ema,
                              temperature=fl.temperature, kd_mode=kd_mode)
    hp = reefl.Hparams(rounds=fl.rounds, lr=lr, min_lr=min_lr, kd_rounds=kd_rounds)
    alg = reefl.reefl(cfg, params, regime=regime, local=local, hp=hp, name=method,
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
  if resume is not None:
    first = resume['round'] + 1
    curve, train_time, uploaded = resume['curve'], resume['train_time'], resume['uploaded']
    teacher = {int(k): np.asarray(v) for k, v in resume['teacher'].items()}
    restored = checkpoint_lib.restore_like(saved(state), resume['params'], 'params')
    state = (state._replace(params=restored[0], opt_state=restored[1])
             if isinstance(restored, tuple) else state._replace(params=restored))
    state = state._replace(round=jnp.int32(resume['round']))

  def snapshot(r):
    return {'round': r, 'curve': curve, 'train_time': train_time, 'uploaded': uploaded,
            'teacher': {str(k): v.tolist() for k, v in teacher.items()}}

  key = jax.random.PRNGKey(seed + 1)
  with progress(fl.rounds, tag, config.progress) as bar:
    bar.update(first - 1)
    for r in range(first, fl.rounds + 1):
      sampled = baselines.sample_clients(method, seed, r, [c.tier for c in clients],
                                         fl.clients_per_round)
      start = time.perf_counter()
      state, diag = reefl.train_round(alg, state, clients, images, labels, sampled,
                                      jax.random.fold_in(key, r), r)
      jax.block_until_ready(state.params)
      train_time += time.perf_counter() - start
      uploaded.append(diag['uploaded'])
      for t, c in diag['teacher'].items():
        teacher[t] = teacher.get(t, 0) + c
      if not diag['finite'] or not np.isfinite(diag['loss']):
        diverged = r
        break
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


def run(config, workdir: str, programs: dict | None = None) -> dict:
  """Runs every (regime, method, repeat) of ``config``; writes the outputs to ``workdir``.

  ``programs``: compiled per-tier programs and evaluations to share (default:
  this run's own; methods with one model share them either way).

  The workdir is held for the whole run (``mg.workdir.Lock``: a second run on it
  stops with one line), and ``config.json`` is written, or the old checkpoints
  deleted for ``resume=False``, only once the data has loaded.
  """
  validate(config)
  with workdir_lib.Lock(workdir):
    return _run_locked(config, workdir, {} if programs is None else programs)


def config_of_record(config, workdir: str, kind: str = 'run') -> str:
  """``config``'s ``config.json`` text, once checked against the one ``workdir`` holds.

  Raises:
    ConfigError: with ``config.resume``, ``workdir`` holds a ``kind`` (a run, a
      sweep) of another config.
  """
  config_json = json.dumps(to_jsonable(config.to_dict()), sort_keys=True, indent=1)
  config_path = os.path.join(workdir, 'config.json')
  if os.path.exists(config_path) and config.resume:
    with open(config_path) as f:
      if f.read() != config_json:
        raise ConfigError(f'{workdir} holds a {kind} of another config; choose another '
                          '--workdir or pass --config.resume=False')
  return config_json


def _run_locked(config, workdir: str, programs: dict) -> dict:
  workdir_lib.check_layout(workdir)
  config_json = config_of_record(config, workdir)
  config_path = os.path.join(workdir, 'config.json')
  store_dir = os.path.join(workdir, checkpoint_lib.CHECKPOINT_DIR)

  start = time.perf_counter()
  split, data, clients = load_data(config)
  if os.path.isdir(store_dir) and not config.resume:  # accepted: start over
    shutil.rmtree(store_dir)
  atomic_write_text(config_path, config_json)
  partition = describe(split, config.data.alpha)

  store = checkpoint_lib.Store(store_dir, config.keep_checkpoints)
  done: dict[str, dict] = {}
  current = None
  latest = store.restore_latest() if config.resume else None
  if latest is not None:
    done = latest.progress['done']
    current = latest.progress.get('current')
    if current is not None:
      saved = latest.arrays['leaves']
      current['params'] = [saved[k] for k in sorted(saved)]

  results = []
  with checkpoint_lib.StopRequest() as stop, MetricsLog(workdir) as log:
    for regime in config.regimes:
      for method in config.methods:
        for repeat in range(config.repeats):
          name = f'{regime}/{method}/{repeat}'
          if name in done:
            results.append(done[name])
            continue
          resume = current if current is not None and current['name'] == name else None

          def save(params, snap, name=name):
            store.save({'leaves': _numbered(checkpoint_lib.host_leaves(params))},
                       {'done': done, 'current': dict(snap, name=name)})

          res = train_method(config, method=method, regime=regime, repeat=repeat, data=data,
                             clients=clients, log=log, stop=stop,
                             resume=resume, save=save, programs=programs)
          done[name] = json.loads(json.dumps(to_jsonable(res)))
          results.append(done[name])
          store.save({'leaves': {'none': np.zeros(())}}, {'done': done, 'current': None})
  store.close()
  wall = time.perf_counter() - start
  return reefl_report.write_outputs(workdir, results, partition=partition, wall_time_s=wall)
