r"""A tiny ReeFL run of the four methods for the tests: seconds.

  python -m experiments.main --config=configs/reefl/test.py --workdir=/tmp/reefl-test

Digits (8x8), 10 clients by Dirichlet(1.0), 2 of them validation clients (8
train, 4 per round), a ViT of 2 blocks of width 16 with 2 exits, 2 rounds. It
checks that the whole pipeline runs and writes its outputs; its accuracies mean
nothing.
"""

from configs.reefl import common as reefl_common


def get_config():
  config = reefl_common.get_config()
  config.data.name = 'digits'
  config.data.source = 'digits'
  config.data.split = 'all'
  config.data.test = 'holdout'
  config.data.test_fraction = 0.5
  config.data.num_clients = 10   # 2 validation clients, 8 train
  config.data.num_validation_clients = 2
  config.data.eval_batch = 256
  config.model.image_size = 8
  config.model.patch_size = 4
  config.model.dim = 16
  config.model.depth = 2
  config.model.heads = 2
  config.model.num_exits = 2
  config.model.init_std = 0.0  # N(0, 1/d_in): from scratch with SGD
  config.model.lora_rank = 2
  config.model.lora_alpha = 4.0
  config.fl.rounds = 2
  config.fl.clients_per_round = 4
  config.fl.kd_rounds = 2.0
  config.eval_every = 1
  config.progress = False
  config.compile_cache_dir = ''  # tests compile afresh, and write nothing outside
  return config
