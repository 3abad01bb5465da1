"""ReeFL's config: the checks before any work, and the model it describes.

``validate(config)`` raises one ``ConfigError`` line for a config that cannot
run (the run fields through ``mg.harness.fields``, shared with MetaGater);
``model_config`` turns the ``model`` section into the ``mg.models.vit.ViTConfig``
a method trains (with or without Ree's modulation).
"""

from __future__ import annotations

import os

from mg.data.specs import SPECS
from mg.harness import fields
from mg.models import vit
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
      ree_mlp_ratio=m.ree_mlp_ratio, ree_max_tokens=m.ree_max_tokens, init_std=m.init_std)


def validate(config) -> None:
  """Raises ``ConfigError`` for a ReeFL config that cannot run."""
  check = fields.check
  fields.validate_run(config)
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
  for method in config.methods:
    for key, value in reefl_methods.settings(method, config).items():
      field = ' or '.join(reefl_methods.reads(method, key))
      check(value > 0, f'{field}={value!r}: {method} needs a {key} > 0')
  check(config.data.test in ('official', 'holdout'), "data.test: expected 'official' or 'holdout'")
  check(not m.init_checkpoint or os.path.isfile(m.init_checkpoint),
        f'model.init_checkpoint={m.init_checkpoint!r} is not a file (a .pth state dict, or '
        'an .npz from python -m experiments.pretrain)')
  check(config.data.name in SPECS, f'data.name={config.data.name!r}: expected one of {tuple(SPECS)}')
  check(SPECS[config.data.name].input_shape[0] <= m.image_size,
        f'model.image_size={m.image_size} is smaller than the {config.data.name} images '
        f'({SPECS[config.data.name].input_shape[0]} pixels; they are only ever upsampled)')
