"""Fields shared by every ReeFL config (``system='reefl'``); each config changes a few.

Sections:
  data:  the images, the global test split, the Dirichlet partition over clients and
         the validation clients among them.
  model: the ViT backbone, its exits, Ree and LoRA (mg.models.vit, mg.models.ree).
  fl:    the federated loop: rounds, sampled clients, local SGD and the KD ramp.
  baselines: the paper's baselines' own settings (the public code's values).
  per_method: each method's own learning rate, KD ramp length, KD weight (None: the
         shared fl.* / baselines.* value; mg.reefl.methods), so every method can run at
         its own settings, chosen on the validation clients (configs/reefl/sweeps/*.py).

Defaults are the public code's (royson/reefl, configs/reeFL/): 100 clients by
Dirichlet(1.0), 10 per round, SGD 0.05 -> 0.001 cosine, clip by value 1,
batches of 32, one local epoch, KD ramp over 300 rounds, Ree with attention
width 16 over 8 heads and FFN ratio 1.35, LoRA rank 32 and alpha 64. Not the
code's: 10 of the 100 clients are validation clients (never trained on; every
evaluation also scores them, and sweeps choose settings on them, never on the
test split), so 90 clients train; ``--config.data.num_validation_clients=0``
restores the code's 100 training clients (the same partition and tiers).
"""

import ml_collections
from ml_collections import config_dict

METHODS = ('reefl', 'reefl_lastkd', 'reefl_nokd', 'reefl_nomod')
BASELINES = ('reefl_maximum', 'exclusivefl', 'inclusivefl', 'inclusivefl_nomd', 'depthfl',
             'depthfl_feddyn', 'scalefl')
# Each method's own settings (config.per_method.<method>.<name>; mg.reefl.methods.SHARED):
# the cosine schedule's ends, the KD ramp's length where a ramp weighs a KD term,
# ScaleFL's constant KD weight and temperature.
_SCHEDULE = ('lr', 'min_lr')
_RAMP = _SCHEDULE + ('kd_rounds',)
PER_METHOD = {
    'reefl': _RAMP, 'reefl_lastkd': _RAMP, 'reefl_nokd': _SCHEDULE, 'reefl_nomod': _RAMP,
    'reefl_maximum': _RAMP, 'exclusivefl': _SCHEDULE, 'inclusivefl': _SCHEDULE,
    'inclusivefl_nomd': _SCHEDULE, 'depthfl': _RAMP, 'depthfl_feddyn': _RAMP,
    'scalefl': _SCHEDULE + ('kd_weight', 'temperature'),
}


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.system = 'reefl'  # mg.systems: which package runs this config
  config.seed = 0
  config.repeats = 1
  config.methods = METHODS
  config.regimes = ('full',)    # full | frozen | lora
  config.eval_every = 10        # rounds between evaluations (validation and test)
  config.progress = True
  config.checkpoint_every = 10
  config.keep_checkpoints = 2
  config.resume = True
  # JAX's persistent compilation cache: a rerun loads its programs instead of
  # compiling them (mg.federated.backend.compile_cache); '' turns it off.
  config.compile_cache_dir = '~/.cache/mg/xla'

  config.data = ml_collections.ConfigDict()
  config.data.name = 'mnist'    # digits | mnist | cifar10 | cifar100
  config.data.source = 'auto'   # auto | digits | raw | tfds
  config.data.dir = config_dict.placeholder(str)
  config.data.split = 'train'   # the images the clients share
  config.data.test = 'official' # official (the test split) | holdout (of data.split)
  config.data.test_fraction = 0.2
  config.data.num_clients = 100  # the partition's clients, validation clients included
  config.data.num_validation_clients = 10  # of num_clients: never trained on (tuning)
  config.data.alpha = 1.0       # Dirichlet concentration of each client's class mix
  config.data.eval_batch = 500

  config.model = ml_collections.ConfigDict()
  config.model.image_size = 224
  config.model.patch_size = 16
  config.model.in_chans = 0     # 0: the dataset's channels
  config.model.dim = 384        # DeiT-S
  config.model.depth = 12
  config.model.heads = 6
  config.model.mlp_ratio = 4.0
  config.model.num_exits = 4
  config.model.raw_history = False
  config.model.ree_heads = 8
  config.model.ree_attn_dim = 16
  config.model.ree_mlp_ratio = 1.35
  config.model.ree_max_tokens = 0   # 0: depth + 1
  # Std of linear weights: 0.02 (the code, for DeiT); 0 = N(0, 1/d_in), which plain
  # SGD needs to leave the initial plateau when a small ViT trains from scratch.
  config.model.init_std = 0.02
  # Std of Ree's and the exit heads' linear weights; None: model.init_std. The code
  # draws them at 0.02 (torch's trunc_normal_, a plain normal at that std).
  config.model.head_init_std = config_dict.placeholder(float)
  config.model.lora_rank = 32
  config.model.lora_alpha = 64.0
  # A DeiT .pth state dict or a backbone from `python -m experiments.pretrain`.
  config.model.init_checkpoint = ''

  config.fl = ml_collections.ConfigDict()
  config.fl.rounds = 1000
  config.fl.clients_per_round = 10
  config.fl.lr = 0.05
  config.fl.min_lr = 0.001
  config.fl.kd_rounds = 300.0   # R_kd of the KD ramp (the code's kl_consistency_weight)
  config.fl.batch_size = 32
  config.fl.clip = 1.0
  config.fl.ema = 0.8
  config.fl.temperature = 1.0
  # How a round's clients map onto the device (mg.federated.tiers): auto (a host loop on
  # XLA:CPU, measured fastest there; vmap over same-tier chunks elsewhere), loop or vmap;
  # group_size: clients per vmapped chunk (0: clients_per_round / num_exits, rounded up).
  config.fl.mapping = 'auto'
  config.fl.group_size = 0
  # With several devices and the vmap mapping: each chunk's clients sharded over a
  # `clients` mesh axis (mg.federated.sharding), as MetaGater's meta.shard_clients.
  config.fl.shard_clients = True

  # The baselines' own settings (mg.reefl.algorithms.baselines.Options; the code's values).
  config.baselines = ml_collections.ConfigDict()
  config.baselines.inclusivefl_beta = 0.2      # momentum distillation weight
  config.baselines.feddyn_alpha = 0.1          # depthfl_feddyn: alpha, its schedule
  config.baselines.feddyn_lr = 0.1             # (SGD 0.1 -> 0.01, weight decay 1e-3)
  config.baselines.feddyn_min_lr = 0.01
  config.baselines.feddyn_weight_decay = 1e-3
  config.baselines.scalefl_widths = ()         # (): the code's list for 4 or 12 exits
  config.baselines.scalefl_kd_weight = 0.05
  config.baselines.scalefl_temperature = 3.0

  # Per-method values of the fields above; None falls back to the shared field
  # (lr, min_lr: fl.* (depthfl_feddyn: baselines.feddyn_*); kd_rounds: fl.kd_rounds;
  # ScaleFL's kd_weight, temperature: baselines.scalefl_*).
  config.per_method = ml_collections.ConfigDict()
  for method, fields in PER_METHOD.items():
    config.per_method[method] = ml_collections.ConfigDict(
        {field: config_dict.placeholder(float) for field in fields})
  return config


def tuned(config: ml_collections.ConfigDict, per_method_lr: dict, variant: str, *,
          quick_rounds: int, name: str) -> ml_collections.ConfigDict:
  """Each method's learning rate chosen on the validation clients, and the variant.

  ``full``: the config's own rounds. ``quick`` (the budget the rates were chosen
  at): ``quick_rounds`` rounds, the KD ramp kept at the same share of them, 3
  repeats. ``name`` (``configs/reefl/<name>.py``) makes a bad variant's error say where.
  """
  for method, lr in per_method_lr.items():
    config.per_method[method].lr = lr
  if variant == 'quick':
    config.fl.kd_rounds = config.fl.kd_rounds * quick_rounds / config.fl.rounds
    config.fl.rounds = quick_rounds
    config.repeats = 3
  elif variant != 'full':
    raise ValueError(f"configs/reefl/{name}.py:{variant}: expected 'full' or 'quick'")
  return config
