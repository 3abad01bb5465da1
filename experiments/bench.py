r"""Speed of a federated round per client-mapping strategy, against a roofline.

  python -m experiments.bench --config=configs/cifar10.py
  python -m experiments.bench --config=configs/mnist.py \
      --config.data.dir=DIR [--methods=metagater,fedavg]

For each method (default: metagater) it measures one round of the config
(``meta.tasks_per_round`` tasks, ``K = meta.local_steps`` local steps of
``meta.batch_size`` images) under every client-mapping strategy
(``mg.federated.mapping``), then how the time per round grows with the tasks
per round (``--scale_tasks``) and with ``K`` (``--scale_steps``) under the
default strategy. Per row:

* ``seconds_per_round``: median over the timed rounds after the first call
  (each timed round waits for its result);
* ``compile_seconds``: first call minus that median (tracing + compiling);
* ``images_per_second``: images the round's local steps read per second,
  ``tasks x K x images per step x batch`` (Per-FedAvg reads 2 or 3 batches per
  step), and ``tasks_per_second``;
* ``roofline_images_per_second``: one jitted training step (``value_and_grad``
  of the same model's loss, gate noise included, plus an SGD update) at the
  same batch size, timed in this process in alternation with the rounds so
  that both see the same machine load; ``ratio`` = round / roofline;
  ``best_seconds_per_round`` is the fastest timed round;
* ``peak_memory_bytes``: the round program's memory as compiled by XLA
  (arguments + outputs + temporaries - aliased), the largest program for
  ``loop``; on GPU/TPU also the allocator's peak (``device_peak_bytes``).

* ``torch_seconds_per_round``, ``torch_images_per_second``, ``vs_torch``
  (torch s/round over this row's s/round): the PyTorch reference round
  (``mg.metagater.torch_reference``, a plain per-client loop of the same round) timed
  after each of this row's rounds; the ``torch`` strategy row is that round
  itself. Absent when torch is not installed (optional; a note says so).

For a ReeFL config (``config.system == 'reefl'``) the rows are
``experiments.bench_reefl``'s: local training per tier and a whole round.

When the config's dataset is not on this machine (or a row needs more tasks
than it has), the rows use synthetic inputs of the dataset's shapes, placed on
the device once, and say so (``data`` column). A table goes to stdout, and
the last line printed is one JSON object:
``{"backend", "device", "devices", "notes", "rows": [{"strategy", "model",
"tasks_per_round", "local_steps", "batch_size", "seconds_per_round",
"compile_seconds", "images_per_second", "roofline_images_per_second",
"peak_memory_bytes", ...}]}``.

Notes (2-core AVX-512 CPU; each figure a median of alternating runs in one
process; docs/speed.md):

* PyTorch's threads. Under load (other jobs on the 2 cores) the reference
  ran a CNN-4 step (batch 64) at 161 images/s with 2 threads and 465 with 1
  (OpenMP threads wait on each other when the cores are oversubscribed; XLA's
  pool degrades far less); on the idle machine 2 threads are its best for the
  CNN (a round at 1,378 vs 763 images/s) and 1 thread for the MLP (19,391 vs
  17,560). ``--torch_threads`` decides the comparison, so README reports
  both: with XLA's own kernels (``mg.federated.backend``) ``loop`` is at
  1.22-1.32x the 2-thread round at K = 1 and 1.00x at K = 5, 1.65-2.02x the
  1-thread one; the MLP at 2.3-2.7x either.
* Batching several tasks' images into one convolution (what ``fused`` does
  for all of them) does not pay on this CPU: a jitted CNN-4 step ran at 231 /
  151 / 134 images/s at batch 64 / 128 / 256 (alternating), so chunks of
  tasks were not built.
* The JAX max-pool's tie rule in PyTorch (``amax`` over a reshape) made the
  reference 1.6x slower; the reference keeps ``F.max_pool2d``
  (``mg.metagater.torch_reference``).
* Compile cache (``config.compile_cache_dir``): the digits default, all
  methods, one repeat, idle machine: compile 42.1 s of 94.2 s wall cold
  (45%), 10.6 s of 66.4 s warm (16%); earlier, with YNNPACK and under load,
  56% / 23%. The bench itself does not use the cache, so its
  ``compile_seconds`` are cold compiles.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import time
from typing import Optional

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from experiments import bench_reefl
from experiments import cli
from mg import data as data_lib
from mg import systems
from mg.metagater import methods as methods_lib
from mg.metagater import torch_reference
from mg.federated import server as server_lib
from mg.federated import backend
from mg.federated import mapping
from mg.federated import sharding

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (configs/*.py).', lock_config=True)
_METHODS = flags.DEFINE_list('methods', ['metagater'], 'Methods to time.')
_STRATEGIES = flags.DEFINE_list(
    'strategies', list(mapping.STRATEGIES) + ['torch'],
    "Client mappings of the first section ('torch': the PyTorch reference round).")
_SCALE_TASKS = flags.DEFINE_list('scale_tasks', ['1', '5', '20', '80'],
                                 'Tasks per round of the scaling section.')
_SCALE_STEPS = flags.DEFINE_list('scale_steps', ['1', '2', '5'],
                                 'Local steps K of the scaling section.')
_SCALE_STRATEGY = flags.DEFINE_string(
    'scale_strategy', 'auto', "Mapping of the scaling sections ('auto': the default).")
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Timed rounds per row (after the first).')
_MIN_ROUNDS = flags.DEFINE_integer('min_rounds', 2, 'Timed rounds per row at least.')
_MAX_SECONDS = flags.DEFINE_float(
    'max_seconds', 30.0, 'Stop timing a row after this long (min_rounds still run).')
_SYNTHETIC = flags.DEFINE_bool('synthetic', False, 'Synthetic inputs even if the data exist.')
_SHARD = flags.DEFINE_bool('shard', True, 'Shard vmap/fused rounds over all devices.')
_TORCH = flags.DEFINE_bool(
    'torch', True, 'Time the PyTorch reference round (mg.metagater.torch_reference) when torch imports.')
_TORCH_THREADS = flags.DEFINE_integer(
    'torch_threads', 0, 'Threads of the PyTorch reference (0: the CPUs this process may use).')
_REEFL_CLIENT_IMAGES = flags.DEFINE_integer(
    'reefl_client_images', 80, 'ReeFL configs: images per client (one local epoch).')
_TUNE_CPU = flags.DEFINE_bool(
    'tune_cpu', True, 'Apply mg.federated.backend.CPU_FLAGS (--notune_cpu: XLA defaults).')


# ----------------------------------------------------------------------------- data


def load_tasks(config, force_synthetic: bool):
  """``(train TaskArrays or None, info, note)`` for the config's dataset."""
  spec = data_lib.SPECS[config.data.name]
  info = {'name': spec.name, 'input_shape': spec.input_shape,
          'num_classes': spec.num_classes}
  if force_synthetic:
    return None, info, 'synthetic inputs (--synthetic)'
  try:
    fed, _, info = data_lib.build(config.data, config.seed)
  except Exception as e:  # pylint: disable=broad-except
    # Any failure to read the dataset (absent files, no download) means: synthetic.
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return None, info, (f'dataset {config.data.name!r} is not on this machine '
                        f'({first[:160]}); synthetic inputs of its shapes')
  return fed.train, info, f"dataset {info['name']} ({info['num_examples']} images)"


def synthetic_tasks(key, num_tasks: int, rows: int, input_shape, num_classes: int):
  """Random ``TaskArrays`` made on the device (nothing crosses the host)."""
  @jax.jit
  def make(key):
    kx, ky = jax.random.split(key)
    return data_lib.TaskArrays(
        x=jax.random.normal(kx, (num_tasks, rows) + tuple(input_shape), jnp.float32),
        y=jax.random.randint(ky, (num_tasks, rows), 0, num_classes, jnp.int32),
        mask=jnp.ones((num_tasks, rows), jnp.float32),
        count=jnp.full((num_tasks,), rows, jnp.int32))
  return make(key)


def synthetic_rows(config) -> int:
  """Rows per synthetic task: a minibatch reads 4 x batch rows' worth of choice.

  With minibatches the round's work does not depend on the task size; full
  batch (``batch_size == 0``) reads every row, so it uses ``max_samples``.
  """
  batch = config.meta.batch_size
  return config.data.max_samples if batch == 0 else min(config.data.max_samples, 4 * batch)


# ----------------------------------------------------------------------------- timing


def _block(tree):
  jax.block_until_ready(tree)
  return tree


def roofline_step(model, batch_size: int, tau: float):
  """One jitted training step (value_and_grad + SGD) at ``batch_size``."""
  loss = server_lib.task_loss(model, tau)
  shape = (batch_size,) + tuple(model.input_shape)

  @jax.jit
  def make_batch(key):
    x = jax.random.normal(key, shape, jnp.float32)
    y = jax.random.randint(key, (batch_size,), 0, model.num_classes, jnp.int32)
    return x, y, jnp.ones((batch_size,), jnp.float32)

  @jax.jit
  def step(params, batch, key):
    value, grads = jax.value_and_grad(loss)(params, batch, key)
    return jax.tree.map(lambda p, g: p - 0.01 * g, params, grads), value

  return step, make_batch


def memory_bytes(round_fn, state, data, key) -> Optional[int]:
  """XLA's memory of the round's largest compiled program (cached compile)."""
  best = None
  programs = round_fn.programs()
  args = {'round': (state, data, key)}
  if 'accumulate' in programs:
    # The per-task program dominates a loop round; its arguments are abstract.
    shared = jax.eval_shape(programs['broadcast'], state)
    task_id = jax.ShapeDtypeStruct((), jnp.int32)
    acc = jax.eval_shape(programs['start'], shared, data, task_id, key)
    args = {'accumulate': (acc, shared, data, task_id, key)}
  for name, a in args.items():
    try:
      stats = programs[name].lower(*a).compile().memory_analysis()
    except Exception:  # pylint: disable=broad-except
      return None
    if stats is None:
      return None
    total = (stats.argument_size_in_bytes + stats.output_size_in_bytes
             + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
    best = total if best is None else max(best, total)
  return int(best)


def device_peak_bytes() -> Optional[int]:
  stats = jax.local_devices()[0].memory_stats()
  return None if not stats else stats.get('peak_bytes_in_use')


def time_row(round_fn, state, data, key, step, step_args, steps_per_burst: int,
             reference=None) -> dict:
  """Compile, then alternate timed rounds with bursts of roofline steps.

  Alternating makes both see the same machine load (medians of each). With a
  ``reference`` (a PyTorch round, no arguments) each timed round is followed
  by one reference round as well (``reference`` in the result: its median).
  """
  start = time.perf_counter()
  _block(round_fn(state, data, key))
  first = time.perf_counter() - start
  params, batch, step_key = step_args
  _block(step(params, batch, step_key))
  if reference is not None:
    reference()  # warm-up
  round_times, step_times, reference_times = [], [], []
  budget_start = time.perf_counter()
  for t in range(_ROUNDS.value):
    if t >= _MIN_ROUNDS.value and time.perf_counter() - budget_start > _MAX_SECONDS.value:
      break
    start = time.perf_counter()
    _block(round_fn(state, data, jax.random.fold_in(key, t + 1)))
    round_times.append(time.perf_counter() - start)
    for _ in range(steps_per_burst):
      start = time.perf_counter()
      params, _ = _block(step(params, batch, step_key))
      step_times.append(time.perf_counter() - start)
    if reference is not None:
      start = time.perf_counter()
      reference()
      reference_times.append(time.perf_counter() - start)
  seconds = statistics.median(round_times)
  return dict(seconds=seconds, compile=max(first - seconds, 0.0),
              step=statistics.median(step_times), best=min(round_times),
              rounds=len(round_times),
              reference=statistics.median(reference_times) if reference_times else None)


# ----------------------------------------------------------------------------- rows

# Methods with a PyTorch reference round (mg.metagater.torch_reference).
TORCH_METHODS = ('metagater', 'metagater_nogate', 'metagater_unaccelerated')


def torch_round(config, name, method, data, tasks: int, batch: int):
  """The method's PyTorch round on ``data`` as a no-argument call, or None.

  None when the method has no reference or ``--notorch``/torch is absent
  (``run_bench`` says which in its notes). Every call starts from the same
  state, as the JAX rows do.
  """
  if not _torch_timed(name):
    return None
  meta = config.meta
  plain = name == 'metagater_unaccelerated'
  reference = torch_reference.MetaGaterRound(
      method.model, data, tasks_per_round=tasks, local_steps=meta.local_steps,
      batch_size=batch, tau=config.model.tau,
      regularizer='none' if name == 'metagater_nogate' else meta.regularizer,
      alpha=1.0 if plain else meta.alpha, eta='beta' if plain else meta.eta,
      seed=config.seed, **{k: float(v) for k, v in method.hparams.items()})
  state = reference.init(method.model.init(jax.random.key(0)))

  def run():
    reference(state)
  return run


def bench_row(config, name, info, real_tasks, strategy, section, rooflines):
  """Measures one (method, strategy, tasks, K) row; returns its dict.

  ``strategy == 'torch'``: the PyTorch reference round itself (``torch_round``).
  """
  meta = config.meta
  method = methods_lib.build(name, config, info)
  if method.algorithm is None:
    raise app.UsageError(f'{name} trains nothing of its own; bench its backbone method')
  tasks = meta.tasks_per_round
  backend = jax.default_backend()
  devices = jax.device_count()
  resolved = 'loop' if strategy == 'torch' else mapping.resolve_strategy(
      strategy, config.model.name, meta.local_steps,
      devices=devices if _SHARD.value else 1, tasks_per_round=tasks)
  mesh = sharding.round_mesh(_SHARD.value) if resolved in mapping.SHARDABLE else None
  key = jax.random.key(config.seed)
  if real_tasks is not None and real_tasks.count.shape[0] >= tasks:
    data, source = real_tasks, config.data.name
  else:
    rows = synthetic_rows(config)
    data = synthetic_tasks(jax.random.fold_in(key, 7), max(tasks, 1), rows,
                           info['input_shape'], info['num_classes'])
    source = 'synthetic'
  data = sharding.place(data, mesh)
  num_tasks = int(data.count.shape[0])
  batch = meta.batch_size or int(data.x.shape[1])
  round_fn = mapping.make_round(
      method.algorithm, num_tasks=num_tasks, tasks_per_round=tasks, strategy=resolved,
      mesh=mesh, fallback=mapping.fallback_strategy(
          backend, config.model.name, devices=sharding.num_shards(mesh)))
  state = sharding.place(
      method.algorithm.init(method.model.init(jax.random.key(0)), **method.hparams), mesh)

  roof_key = (method.model, batch)
  if roof_key not in rooflines:
    step, make_batch = roofline_step(method.model, batch, config.model.tau)
    params = method.model.init(jax.random.key(1))
    rooflines[roof_key] = (step, (params, make_batch(jax.random.key(2)), jax.random.key(3)))
  step, step_args = rooflines[roof_key]
  images = tasks * meta.local_steps * method.images_per_step * batch
  burst = int(min(max(images // batch, 1), 20))
  reference = torch_round(config, name, method, data, tasks, batch)
  if strategy == 'torch':
    # The reference in the JAX round's place: no second reference, no XLA program.
    torch_fn, reference = reference, None
    round_fn = mapping.Round(lambda *_: torch_fn(), 'torch', None, tasks,
                             {'mapping': 'torch'}, programs={})
  t = time_row(round_fn, state, data, key, step, step_args, burst, reference)
  roofline = batch / t['step']
  torch_fields = {}
  if t['reference'] is not None:
    torch_fields = dict(torch_seconds_per_round=t['reference'],
                        torch_images_per_second=images / t['reference'],
                        vs_torch=t['reference'] / t['seconds'])
  elif strategy == 'torch':
    torch_fields = dict(torch_seconds_per_round=t['seconds'],
                        torch_images_per_second=images / t['seconds'], vs_torch=1.0)
  row = dict(
      section=section, method=name, strategy=strategy, mapping=round_fn.mapping,
      model=config.model.name, tasks_per_round=tasks, local_steps=meta.local_steps,
      batch_size=batch, seconds_per_round=t['seconds'], compile_seconds=t['compile'],
      images_per_round=images, images_per_second=images / t['seconds'],
      tasks_per_second=tasks / t['seconds'], roofline_images_per_second=roofline,
      ratio=images / t['seconds'] / roofline,
      best_seconds_per_round=t['best'],
      peak_memory_bytes=(None if strategy == 'torch'
                         else memory_bytes(round_fn, state, data, key)),
      device_peak_bytes=device_peak_bytes(), rounds_timed=t['rounds'], data=source,
      devices=sharding.num_shards(mesh), note=round_fn.note, **torch_fields)
  print(_format_row(row), flush=True)
  return row


def _with(config, **meta_fields):
  config = copy.deepcopy(config)
  with config.unlocked():
    for field, value in meta_fields.items():
      config.meta[field] = value
  return config


def _format_row(r) -> str:
  mem = '-' if r['peak_memory_bytes'] is None else f"{r['peak_memory_bytes'] / 2**20:.0f}"
  vs_torch = f"{r['vs_torch']:.2f}" if r.get('vs_torch') is not None else '-'
  return (f"| {r['section']:10s} | {r['method']:12s} | {r['strategy']:7s} | "
          f"{r['mapping'] or '-':7s} | {r['tasks_per_round']:5d} | {r['local_steps']:2d} | "
          f"{r['batch_size']:5d} | {r['seconds_per_round']:9.4f} | "
          f"{r['compile_seconds']:8.2f} | {r['images_per_second']:10.0f} | "
          f"{r['tasks_per_second']:8.2f} | {r['roofline_images_per_second']:10.0f} | "
          f"{r['ratio']:5.2f} | {vs_torch:>8s} | {mem:>7s} | {r['data']} |")


HEADER = ('| section    | method       | asked   | ran     | tasks |  K | batch | '
          's/round   | compile  | img/s      | tasks/s  | roof img/s | ratio | vs torch | '
          'mem MiB | data |\n' + '|' + '---|' * 16)


def _torch_timed(name) -> bool:
  return _TORCH.value and torch_reference.available() and name in TORCH_METHODS


def torch_notes(methods, known=TORCH_METHODS) -> list:
  """Why the PyTorch reference is not timed, where it is not; its threads where it is."""
  if not _TORCH.value:
    return ['PyTorch reference not timed (--notorch)']
  if not torch_reference.available():
    return ['PyTorch reference not timed: torch is not installed (it is optional)']
  threads = torch_reference.set_threads(_TORCH_THREADS.value or None)
  notes = [f'PyTorch reference: torch {torch_reference.torch.__version__}, '
           f'{threads} threads; vs_torch = torch s/round / this row s/round']
  notes += [f'no PyTorch reference for {name}' for name in methods if name not in known]
  return notes


def run_bench(config) -> dict:
  """Every row of the benchmark; returns the final JSON object."""
  real_tasks, info, data_note = load_tasks(config, _SYNTHETIC.value)
  device = jax.local_devices()[0]
  notes = [data_note, f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"]
  print(f'backend {jax.default_backend()}, device {device.device_kind}, '
        f'{jax.device_count()} device(s); {data_note}', flush=True)
  print(HEADER, flush=True)
  notes += torch_notes(_METHODS.value)
  rows, rooflines = [], {}
  for name in _METHODS.value:
    for strategy in _STRATEGIES.value:
      if strategy == 'torch' and not _torch_timed(name):
        continue
      rows.append(bench_row(config, name, info, real_tasks, strategy, 'strategy',
                            rooflines))
    for tasks in map(int, _SCALE_TASKS.value):
      rows.append(bench_row(_with(config, tasks_per_round=tasks), name, info, real_tasks,
                            _SCALE_STRATEGY.value, 'tasks', rooflines))
    for steps in map(int, _SCALE_STEPS.value):
      rows.append(bench_row(_with(config, local_steps=steps), name, info, real_tasks,
                            _SCALE_STRATEGY.value, 'steps', rooflines))
  return {'backend': jax.default_backend(), 'device': device.device_kind,
          'devices': jax.device_count(), 'notes': notes, 'rows': rows}


def run_reefl_bench(config) -> dict:
  """The ReeFL rows (``experiments.bench_reefl``); returns the final JSON object."""
  device = jax.local_devices()[0]
  print(f'backend {jax.default_backend()}, device {device.device_kind}, '
        f'{jax.device_count()} device(s); ReeFL', flush=True)
  print(HEADER, flush=True)
  notes = torch_notes(['reefl'], known=('reefl',))
  rows, note = bench_reefl.reefl_rows(
      config, time_row, _REEFL_CLIENT_IMAGES.value,
      lambda row: print(_format_row(row), flush=True),
      torch_round=_TORCH.value and torch_reference.available())
  return {'backend': jax.default_backend(), 'device': device.device_kind,
          'devices': jax.device_count(),
          'notes': [note, f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"] + notes,
          'rows': rows}


def _counts(flag, values) -> str:
  """'' if every value of a list flag is an integer >= 1, else the problem."""
  for value in values:
    if not value.strip().isdigit() or int(value) < 1:
      return f'--{flag}={",".join(values)}: {value!r} is not an integer >= 1'
  return '' if values else f'--{flag} is empty: give integers >= 1'


def flag_problems(methods, strategies, scale_tasks, scale_steps, rounds, min_rounds,
                  max_seconds, system: str = 'metagater', client_images: int = 1) -> list:
  """Every problem with the benchmark's flags, as lines naming the flag.

  ``methods`` is None when ``--methods`` was not given; ``system``: the config's.
  """
  problems = []
  if system == 'reefl':
    if methods is not None:
      problems.append(f'--methods={",".join(methods)}: a ReeFL config times its own round '
                      'and tiers (the ReeFL model); --methods chooses MetaGater methods')
    if client_images < 1:
      problems.append(f'--reefl_client_images={client_images}: expected an integer >= 1')
    methods = ['metagater']
  trainable = tuple(m for m in methods_lib.METHODS if m not in methods_lib.BACKBONE_OF)
  for name in (['metagater'] if methods is None else methods) or ['']:
    if name not in trainable:
      problems.append(f'--methods: {name!r} is not a method with its own round; expected '
                      f'some of {trainable}')
  for strategy in strategies:
    if strategy not in ('auto', 'torch') and strategy not in mapping.STRATEGIES:
      problems.append(f'unknown strategy {strategy!r}; expected auto, torch or one of '
                      f'{mapping.STRATEGIES}')
  problems += [p for p in (_counts('scale_tasks', scale_tasks),
                           _counts('scale_steps', scale_steps)) if p]
  if rounds < 1:
    problems.append(f'--rounds={rounds}: time at least 1 round per row')
  if min_rounds < 1:
    problems.append(f'--min_rounds={min_rounds}: time at least 1 round per row')
  if not max_seconds > 0:
    problems.append(f'--max_seconds={max_seconds}: expected a number of seconds > 0')
  return problems


# Each system's rows, by ``config.system`` (``mg.systems``).
_BENCHES = {'metagater': run_bench, 'reefl': run_reefl_bench}


def main(argv):
  cli.no_arguments(argv)
  # Every flag and config value is checked before any work.
  methods = _METHODS.value if flags.FLAGS['methods'].present else None
  problems = flag_problems(methods, _STRATEGIES.value + [_SCALE_STRATEGY.value],
                           _SCALE_TASKS.value, _SCALE_STEPS.value, _ROUNDS.value,
                           _MIN_ROUNDS.value, _MAX_SECONDS.value,
                           system=systems.name_of(_CONFIG.value),
                           client_images=_REEFL_CLIENT_IMAGES.value)
  if problems:
    sys.exit('error: ' + '; '.join(problems))
  try:
    systems.get(_CONFIG.value).validate(_CONFIG.value)
  except cli.USER_ERRORS as e:
    cli.exit_with(e)
  backend.configure(tune_cpu=_TUNE_CPU.value, cpu_options=systems.cpu_options(_CONFIG.value))
  result = _BENCHES[systems.name_of(_CONFIG.value)](_CONFIG.value)
  sys.stdout.write(json.dumps(result) + '\n')


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(main, flags_parser=cli.parse_flags)
