r"""ReeFL on CIFAR-100 with the paper's setup (DeiT-S/16 at 224 px).

  python -m experiments.main --config=configs/reefl/cifar100.py \
      --config.data.dir=DIR --config.model.init_checkpoint=deit_small_patch16_224-cd65a155.pth
  python -m experiments.main --config=configs/reefl/cifar100.py:12 ...   # 12 exits

The paper's and the public code's CIFAR-100 experiment
(``configs/reeFL/dataset/cifar100.yaml`` + ``accumulator/reeFL.yaml``): DeiT-S
(width 384, 12 blocks, 6 heads, patch 16, 224x224), E = 4 (default) or 12
exits and tiers, 100 clients by Dirichlet(1.0) over the 50,000 training
images (here 10 of them validation clients, never trained on, as every ReeFL
config; ``--config.data.num_validation_clients=0`` trains all 100 as the code),
10 per round, 1,000 rounds, global evaluation on the official test split; frozen backbone (the code's default ``freeze_base_model: True``),
``full`` and ``lora`` (rank 32, alpha 64) as the other regimes. Ree keeps 13
position slots (``12 + 1``) and the code's 0.02 init. The 32x32 images are
resized bilinearly to 224x224 on the fly (the code's test-time ``Resize``); the
code's training augmentation (RandomResizedCrop, flip) is not done here.

Expected: not run here. The DeiT weights cannot be downloaded on these
machines (pass a local copy with ``--config.model.init_checkpoint``, or a
backbone pretrained here with ``python -m experiments.pretrain``), and one
round of DeiT-S on 10 clients x 500 images at 224 px is far beyond a 2-core CPU.
"""

from configs.reefl import common as reefl_common


def get_config(exits: str = '4'):
  config = reefl_common.get_config()
  config.data.name = 'cifar100'
  config.data.split = 'train'
  config.data.test = 'official'
  config.data.eval_batch = 100
  config.regimes = ('frozen', 'full', 'lora')
  config.model.image_size = 224
  config.model.patch_size = 16
  config.model.dim = 384
  config.model.depth = 12
  config.model.heads = 6
  config.model.in_chans = 3
  config.model.num_exits = int(exits)
  config.fl.rounds = 1000
  config.fl.kd_rounds = 300.0
  config.eval_every = 500
  return config
