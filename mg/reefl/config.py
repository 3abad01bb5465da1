"""ReeFL's config: the checks before any work, and the model it describes.

``validate(config)`` raises one ``ConfigError`` line for a config that cannot
run (the run fields through ``mg.harness.fields``, shared with MetaGater);
``model_config`` turns the ``model`` section into the ``mg.models.vit.ViTConfig``
a method trains (with or without Ree's modulation).
"""

from __future__ import annotations

import os

from mg import data as data_lib
from mg.data.specs import SPECS
from mg.federated import tiers
from mg.harness import fields
from mg.models import exit_heads, vit
from mg.reefl import methods as reefl_methods
from mg.reefl.algorithms import baselines, reefl


def model_config(config, modulation: bool = True) -> vit.ViTConfig:
  m = config.model
  spec = SPECS[config.data.name]
  return vit.ViTConfig(
      image_size=m.image_size, patch_size=m.patch_size, in_chans=m.in_chans or spec.input_shape[2],
      dim=m.dim, depth=m.depth, heads=m.heads, num_exits=m.num_exits,
      num_classes=spec.num_classes, mlp_ratio=m.mlp_ratio, modulation=modulation,
      raw_history=m.raw_history, ree_heads=m.ree_heads, ree_attn_dim=m.ree_attn_dim,
      ree_mlp_ratio=m.ree_mlp_ratio, ree_max_tokens=m.ree_max_tokens, init_std=m.init_std,
      head_init_std=m.head_init_std)


def validate(config, pretraining: bool = False) -> None:
  """Raises ``ConfigError`` (or ``mg.data.DataError``) for a ReeFL config that cannot run.

  Every field is checked before any work, each in one line naming the field,
  its value and what is expected; ranges first, so no check divides by zero.
  ``pretraining``: the config's images are fitted to the model
  (``mg.reefl.pretrain.fit_images``), so they may have other channels and sizes.
  """
  check = fields.check
  check(config.get('system') == 'reefl', f"system={config.get('system', 'metagater')!r}: "
        'expected a ReeFL config (configs/reefl/*.py)')
  fields.validate_run(config)
  _methods(config)
  _model(config, pretraining)
  _data(config)
  _fl(config)
  _baselines(config)
  m = config.model
  check(not m.init_checkpoint or os.path.isfile(m.init_checkpoint),
        f'model.init_checkpoint={m.init_checkpoint!r} is not a file (a .pth state dict, or '
        'an .npz from python -m experiments.pretrain)')


def _methods(config) -> None:
  check, known = fields.check, tuple(reefl.METHODS) + baselines.METHODS
  methods, regimes = tuple(config.methods), tuple(config.regimes)
  check(len(methods) > 0, f'methods is empty: name at least one of {known}')
  check(len(regimes) > 0, f'regimes is empty: name at least one of {reefl.REGIMES}')
  for m in methods:
    check(m in known, f'methods: unknown method {m!r}; expected some of {known}')
  for r in regimes:
    check(r in reefl.REGIMES, f'regimes: unknown regime {r!r}; expected some of {reefl.REGIMES}')
  check(len(set(methods)) == len(methods), f'methods={methods}: a method is repeated')
  check(len(set(regimes)) == len(regimes), f'regimes={regimes}: a regime is repeated')


def _model(config, pretraining: bool) -> None:
  check, m = fields.check, config.model
  for field in ('image_size', 'patch_size', 'dim', 'depth', 'heads', 'num_exits',
                'ree_heads', 'ree_attn_dim'):
    fields.integer(config, f'model.{field}')
  for field in ('in_chans', 'ree_max_tokens', 'lora_rank'):
    fields.integer(config, f'model.{field}', low=0)
  for field in ('mlp_ratio', 'ree_mlp_ratio', 'lora_alpha'):
    fields.positive(config, f'model.{field}')
  check(fields.is_number(m.init_std) and m.init_std >= 0,
        f'model.init_std={m.init_std!r}: expected a number >= 0 (0: N(0, 1/d_in))')
  head = m.head_init_std
  check(head is None or (fields.is_number(head) and head >= 0),
        f'model.head_init_std={head!r}: expected a number >= 0 (0: N(0, 1/d_in)) or None '
        '(model.init_std)')
  fields.boolean(config, 'model.raw_history')
  check(m.depth % m.num_exits == 0, f'model.depth={m.depth} is not a multiple of '
        f'model.num_exits={m.num_exits}')
  check(m.image_size % m.patch_size == 0, f'model.image_size={m.image_size} is not a '
        f'multiple of model.patch_size={m.patch_size}')
  check(m.dim % m.heads == 0, f'model.dim={m.dim} is not a multiple of model.heads={m.heads}')
  check(m.ree_attn_dim % m.ree_heads == 0, f'model.ree_attn_dim={m.ree_attn_dim} is not a '
        f'multiple of model.ree_heads={m.ree_heads}')
  check(m.ree_max_tokens == 0 or m.ree_max_tokens >= m.depth + 1,
        f'model.ree_max_tokens={m.ree_max_tokens}: Ree reads up to depth + 1 = '
        f'{m.depth + 1} tokens; use at least that, or 0 for exactly that')
  check('lora' not in config.regimes or m.lora_rank > 0,
        f"regimes has 'lora' but model.lora_rank={m.lora_rank}: give LoRA a rank >= 1")
  spec = SPECS.get(config.data.name)
  if spec is not None and not pretraining:
    check(m.in_chans in (0, spec.input_shape[2]),
          f'model.in_chans={m.in_chans}: the {config.data.name} images have '
          f'{spec.input_shape[2]} channel(s); use 0 (the dataset\'s) or '
          f'{spec.input_shape[2]}')
    check(spec.input_shape[0] <= m.image_size,
          f'model.image_size={m.image_size} is smaller than the {config.data.name} images '
          f'({spec.input_shape[0]} pixels; they are only ever upsampled)')


def _data(config) -> None:
  check, d = fields.check, config.data
  data_lib.validate_source(d)
  check(d.test in ('official', 'holdout'),
        f"data.test={d.test!r}: expected 'official' (the dataset's test split) or "
        "'holdout' (a stratified share of data.split)")
  if d.test == 'official':
    check(d.split == 'train', f"data.split={d.split!r} with data.test='official': the "
          "clients must not share the test images; use data.split='train', or "
          "data.test='holdout'")
  else:
    check(fields.is_number(d.test_fraction) and 0 < d.test_fraction < 1,
          f'data.test_fraction={d.test_fraction!r}: expected a fraction strictly between '
          '0 and 1 (the share of data.split held out as the test split)')
  fields.integer(config, 'data.num_clients')
  fields.integer(config, 'data.eval_batch')
  check(isinstance(d.num_validation_clients, int) and not isinstance(
      d.num_validation_clients, bool) and 0 <= d.num_validation_clients < d.num_clients,
        f'data.num_validation_clients={d.num_validation_clients!r}: expected an integer in '
        f'0..{d.num_clients - 1} (fewer than data.num_clients={d.num_clients}: some '
        'clients must train)')
  check(fields.is_number(d.alpha) and d.alpha > 0,
        f'data.alpha={d.alpha!r}: expected a number > 0 (the Dirichlet concentration; '
        'small: each client holds few classes)')


def _fl(config) -> None:
  check, fl, d = fields.check, config.fl, config.data
  for field in ('rounds', 'batch_size', 'clients_per_round'):
    fields.integer(config, f'fl.{field}')
  training = d.num_clients - d.num_validation_clients
  check(fl.clients_per_round <= training,
        f'fl.clients_per_round={fl.clients_per_round}: expected 1..{training} (the '
        'training clients: data.num_clients - data.num_validation_clients)')
  for field in ('lr', 'kd_rounds', 'temperature'):
    fields.positive(config, f'fl.{field}')
  check(fields.is_number(fl.ema) and 0 <= fl.ema < 1,
        f'fl.ema={fl.ema!r}: expected a number in [0, 1) (the teacher choice\'s EMA weight)')
  check(fields.is_number(fl.clip) and fl.clip >= 0,
        f'fl.clip={fl.clip!r}: expected a number >= 0 (0 turns clipping off)')
  mappings = ('auto',) + tiers.MAPPINGS
  check(fl.mapping in mappings,
        f'fl.mapping={fl.mapping!r}: expected one of {mappings} (how a round\'s '
        'clients map onto the device; auto: measured per backend)')
  group = fl.group_size
  check(isinstance(group, int) and not isinstance(group, bool) and group >= 0,
        f'fl.group_size={group!r}: expected an integer >= 0 (clients per vmapped chunk; 0: '
        'fl.clients_per_round / model.num_exits, rounded up)')
  check(isinstance(fl.shard_clients, bool),
        f'fl.shard_clients={fl.shard_clients!r}: expected True or False (shard a '
        "vmapped chunk's clients over the devices)")
  for method in config.methods:
    settings = reefl_methods.settings(method, config)
    for key, value in settings.items():
      field = ' or '.join(reefl_methods.reads(method, key))
      check(fields.is_number(value) and value > 0,
            f'{field}={value!r}: {method} needs a {key} > 0')
    check(settings['min_lr'] <= settings['lr'],
          f"{' or '.join(reefl_methods.reads(method, 'min_lr'))}={settings['min_lr']!r} is "
          f"above {method}'s lr={settings['lr']!r}: the cosine schedule decays from lr "
          'to min_lr')


def _baselines(config) -> None:
  check, b, m = fields.check, config.baselines, config.model
  check(fields.is_number(b.inclusivefl_beta) and 0 <= b.inclusivefl_beta <= 1,
        f'baselines.inclusivefl_beta={b.inclusivefl_beta!r}: expected a number in [0, 1]')
  for field in ('feddyn_alpha', 'feddyn_weight_decay', 'scalefl_kd_weight'):
    value = b[field]
    check(fields.is_number(value) and value >= 0,
          f'baselines.{field}={value!r}: expected a number >= 0')
  if 'scalefl' not in config.methods:
    return
  widths = tuple(b.scalefl_widths)
  if not widths:
    check(m.num_exits in exit_heads.SCALEFL_WIDTHS,
          f"baselines.scalefl_widths=(): ScaleFL's own width lists are for "
          f'{sorted(exit_heads.SCALEFL_WIDTHS)} exits, not model.num_exits={m.num_exits}; '
          f'give {m.num_exits} widths in (0, 1]')
    return
  check(len(widths) == m.num_exits,
        f'baselines.scalefl_widths={widths}: {len(widths)} width(s) for '
        f'model.num_exits={m.num_exits}; give one per exit')
  for w in widths:
    check(fields.is_number(w) and 0 < w <= 1 and int(m.dim * w) >= 1,
          f'baselines.scalefl_widths={widths}: {w!r} is not a width in (0, 1] that leaves '
          f'model.dim={m.dim} at least one channel')


def check_clients(config, split) -> None:
  """Checks ``fl.batch_size`` against the drawn clients, before any training.

  A local batch larger than every client only repeats its images at a larger
  cost; it must be at most the largest training client's images.
  """
  largest = max(len(c) for c in split.clients)
  fields.check(config.fl.batch_size <= largest,
               f'fl.batch_size={config.fl.batch_size} is more than the {largest} images of '
               f'the largest training client; use at most {largest}')
