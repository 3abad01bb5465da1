r"""ReeFL rows of ``python -m experiments.bench``: local training per tier, one round.

  python -m experiments.bench --config=configs/reefl/mnist.py

For a ReeFL config (``config.system == 'reefl'``), method ``reefl`` in the
config's first regime, on synthetic inputs of the dataset's shapes (speed does
not depend on the pixels):

* one row per budget tier (``section`` 'tier<t>'): one client's local training
  (``mg.reefl.algorithms.reefl.make_local_train``, the one program every tier
  runs: one epoch of ``--reefl_client_images`` images in batches of
  ``fl.batch_size``, KD and clipping included) against that tier's
  single-step roofline, one jitted ``value_and_grad`` + clipped SGD step of
  the same loss on one batch of the truncated model, timed in alternation
  (the program compiles at the first tier's row);
* one row for a whole round (``section`` 'round'): ``fl.clients_per_round``
  clients of tiers ``i mod E`` under the config's client mapping
  (``fl.mapping``, ``auto``: a host loop on XLA:CPU, vmapped same-tier chunks
  elsewhere; the row's ``mapping``; with several devices and ``vmap``, each
  chunk sharded over them as in a run, ``devices``) plus the aggregation on the device
  (``mg.federated.tiers.train_round``); its roofline is the round's steps at
  the tier rows' step times. The round compiles its own program, so its
  ``compile`` column is how much longer a run's cold first round takes than
  a later one;
* with PyTorch installed (and not ``--notorch``), the round row's
  ``torch_seconds_per_round`` / ``vs_torch`` and a ``torch`` row: the same
  round as a plain PyTorch per-client loop (``mg.reefl.torch_reference``:
  the same clients, images and starting weights), one reference round timed
  after each JAX round, so both see the same machine load.

Rows have the fields of the MetaGater rows (``tasks_per_round`` = clients,
``local_steps`` = batches per client) plus ``tier``.
"""

from __future__ import annotations

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from mg.reefl import config as reefl_config
from mg.reefl import run as reefl_run
from mg.reefl import torch_reference
from mg.federated import sharding
from mg.federated import tiers
from mg.reefl.algorithms import reefl
from mg.data.specs import SPECS
from mg.models import vit


def _synthetic(key, count: int, shape, num_classes: int):
  kx, ky = jax.random.split(key)
  images = jax.random.normal(kx, (count,) + tuple(shape), jnp.float32)
  return images, jax.random.randint(ky, (count,), 0, num_classes, jnp.int32)


def _tier_step(cfg, tier: int, local):
  """One jitted local step of a tier (loss, value_and_grad, clip, SGD) on stacked blocks."""
  mode = jnp.int32(reefl.KD_MODES.index(local.kd_mode))

  def loss_fn(trainable, frozen, x, y, w):
    params = vit.unflatten({**trainable, **frozen})
    logits = jnp.stack(vit.apply(params, x, cfg, tier))
    return reefl.local_loss(logits, y, w, jnp.zeros((tier + 1,)), 1.0, local, mode)[0]

  @jax.jit
  def step(shared, batch, key):
    del key
    trainable, frozen = shared
    x, y = batch
    grads = jax.grad(loss_fn)(trainable, frozen, x, y, jnp.ones(y.shape, jnp.float32))
    grads = jax.tree.map(lambda g: jnp.clip(g, -local.clip, local.clip), grads)
    return (jax.tree.map(lambda p, g: p - 0.01 * g, trainable, grads), frozen), None

  return step


def _own(state, cfg, tier: int, regime: str):
  """(trainable, frozen) of the tier's truncated model, blocks stacked: the roofline's input."""
  own = traverse_util.flatten_dict(vit.tier_params(state.params, tier, cfg), sep='/')
  return reefl.split(own, regime)


def _torch_round(cfg, config, regime, local, hp, images, labels, client_images: int):
  """The PyTorch reference of the timed round (all its clients, round 1), no arguments."""
  clients = config.fl.clients_per_round
  reference = torch_reference.ReeFLRound(
      cfg, np.asarray(images), np.asarray(labels),
      [np.arange(client_images) + i * client_images for i in range(clients)],
      local=local, hp=hp, regime=regime, clients_per_round=clients, seed=config.seed)
  state = reference.init(reefl_run.initial_params(config, cfg, jax.random.PRNGKey(config.seed)))
  return lambda: reference(state, 1, range(clients))


def reefl_rows(config, time_row, client_images: int, print_row,
               torch_round: bool = False) -> tuple[list, str]:
  """The ReeFL rows (module docstring) and the data note.

  ``time_row``: ``experiments.bench.time_row``; ``print_row(row)`` prints one;
  ``torch_round``: time the PyTorch reference round too (torch must import).
  """
  fl = config.fl
  spec = SPECS[config.data.name]
  kd_mode, modulation = reefl.METHODS['reefl']
  cfg = reefl_config.model_config(config, modulation)
  regime = config.regimes[0]
  if regime == 'lora':
    cfg = cfg._replace(lora_rank=config.model.lora_rank, lora_alpha=config.model.lora_alpha)
  params = reefl_run.initial_params(config, cfg, jax.random.PRNGKey(config.seed))
  local = reefl.LocalConfig(batch_size=fl.batch_size, clip=fl.clip, ema=fl.ema,
                            temperature=fl.temperature, kd_mode=kd_mode)
  clients = fl.clients_per_round
  images, labels = _synthetic(jax.random.PRNGKey(1), clients * client_images,
                              spec.input_shape, spec.num_classes)
  steps = -(-client_images // fl.batch_size)
  batch = (images[:fl.batch_size], labels[:fl.batch_size])
  key = jax.random.PRNGKey(2)
  programs = {}  # the compiled local training, shared by the tier rows
  hp = reefl.Hparams(rounds=fl.rounds, lr=fl.lr, min_lr=fl.min_lr, kd_rounds=fl.kd_rounds)
  alg = reefl.reefl(cfg, regime=regime, local=local, hp=hp, programs=programs)
  state = alg.init(params)
  common = dict(section='tier', method='reefl', strategy='loop', mapping='loop',
                batch_size=fl.batch_size, data='synthetic', devices=1, note='',
                peak_memory_bytes=None, device_peak_bytes=None)
  rows, step_seconds, steps_of = [], {}, {}
  program = programs['all'] = reefl.make_local_train(cfg, local)
  for tier in range(cfg.num_exits):
    shared = alg.broadcast(state, tier)
    data = reefl.ClientData(jnp.arange(client_images, dtype=jnp.int32),
                            jnp.int32(client_images), tier)
    mode = jnp.int32(reefl.KD_MODES.index(kd_mode))

    def one_client(s, d, k, shared=shared, data=data, mode=mode):
      del s, d
      return program(shared[0], shared[1], images, labels, data.index, data.count, k,
                     jnp.float32(fl.lr), jnp.float32(1.0), mode, jnp.int32(data.tier))

    step = steps_of[tier] = _tier_step(cfg, tier, local)
    t = time_row(one_client, None, None, key, step, (_own(state, cfg, tier, regime), batch, key),
                 steps)
    step_seconds[tier] = t['step']
    rows.append(_row(dict(common, section=f'tier{tier}'), t, model=f'vit-tier{tier}', tier=tier,
                     tasks=1, steps=steps))
    print_row(rows[-1])

  client_list = [reefl.ClientData(jnp.arange(client_images, dtype=jnp.int32) + i * client_images,
                                  jnp.int32(client_images), i % cfg.num_exits, i)
                 for i in range(clients)]

  cold = reefl.reefl(cfg, regime=regime, local=local, programs={}, hp=hp)

  mapping, group, mesh = reefl_run.client_mapping(config)
  placed = (images, labels) if mesh is None else sharding.place((images, labels), mesh)

  def one_round(s, d, k):
    del d
    return tiers.train_round(cold, s, client_list, *placed, range(clients), k, 1,
                             mapping, group, mesh)[0]

  reference = (_torch_round(cfg, config, regime, local, hp, images, labels, client_images)
               if torch_round else None)
  last = cfg.num_exits - 1
  t = time_row(one_round, state, None, key, steps_of[last],
               (_own(state, cfg, last, regime), batch, key), steps, reference=reference)
  t['step'] = (sum(step_seconds[c.tier] for c in client_list) / clients)
  round_common = dict(common, section='round', strategy=mapping, mapping=mapping,
                      devices=sharding.num_shards(mesh))
  rows.append(_row(round_common, t, model='vit-all-tiers', tier=None, tasks=clients,
                   steps=steps))
  if reference is not None:
    torch_fields = dict(torch_seconds_per_round=t['reference'],
                        torch_images_per_second=rows[-1]['images_per_round'] / t['reference'])
    rows[-1].update(torch_fields, vs_torch=t['reference'] / t['seconds'])
    print_row(rows[-1])
    # The reference round itself, from the same alternation (its roofline: the JAX one).
    torch_t = dict(t, seconds=t['reference'], compile=0.0, best=t['reference'])
    rows.append(_row(dict(round_common, section='torch', strategy='torch', mapping='torch'),
                     torch_t, model='vit-all-tiers', tier=None, tasks=clients, steps=steps))
    rows[-1].update(torch_fields, vs_torch=1.0)
  print_row(rows[-1])
  return rows, (f'ReeFL: synthetic inputs of {spec.name} shapes, {client_images} images '
                f'per client, regime {regime}; round roofline = its steps at the tier '
                'rows\' step times')


def _row(common, t, *, model, tier, tasks, steps) -> dict:
  images = tasks * steps * common['batch_size']
  roofline = common['batch_size'] / t['step']
  return dict(
      common, model=model, tier=tier, tasks_per_round=tasks, local_steps=steps,
      seconds_per_round=t['seconds'], compile_seconds=t['compile'],
      images_per_round=images, images_per_second=images / t['seconds'],
      tasks_per_second=tasks / t['seconds'], roofline_images_per_second=roofline,
      ratio=images / t['seconds'] / roofline, best_seconds_per_round=t['best'],
      rounds_timed=t['rounds'])
