r"""ReeFL on MNIST from a backbone pretrained on CIFAR-10: the ``frozen`` and ``lora`` regimes.

  python -m experiments.pretrain --config=configs/reefl/mnist.py \
      --config.data.name=cifar10 --config.data.split=train --config.data.dir=DIR \
      --config.model.in_chans=1 --out=runs/reefl_mnist_backbone.npz      # DIR/cifar-10-batches-py
  python -m experiments.main --config=configs/reefl/mnist_pretrained.py:frozen \
      --config.data.dir=DIR                              # or :lora

The paper federates a DeiT pretrained on ImageNet, another dataset than the
clients'. Here the backbone is ``configs/reefl/mnist.py``'s ViT (28x28, patch 7,
width 64, 8 blocks, exits after 2, 4, 6, 8), pretrained centrally on the real
CIFAR-10 training images (45,000 of the 50,000; 10% held out), made grey by
luma and centre-cropped to 28x28 (``mg.reefl.pretrain.fit_images``), 10 epochs of Adam
1e-3 (``experiments.pretrain``'s defaults): natural images, not digits, so no
MNIST image or label is seen before the federation. As the code's DeiT, it is
pretrained as a plain ViT (one head after the last block, no Ree), and Ree and
the exit heads start as the code starts them, N(0, 0.02^2)
(``model.head_init_std``). Then the MNIST federation of
``configs/reefl/mnist.py:quick`` (same clients, tiers, test split, 50 rounds,
KD ramp over 15, 3 repeats, all 11 methods) in one regime: ``frozen`` (only
Ree, or a baseline's exit heads, train and upload) or ``lora`` (those and rank-8
LoRA factors on q and v, alpha 16).

Settings: each method's starting learning rate, per regime, was chosen on the
10 validation clients, never on the test split, by
``configs/reefl/sweeps/mnist_pretrained.py`` (7 values per method, one seed, one
sweep per regime), with the earlier backbone (pretrained through Ree, every exit
supervised) and Ree and the heads at N(0, 1/d_in); docs/reefl_results.md's
pretrained tables were measured with those too and are to be rerun.
"""

from configs.reefl import common as reefl_common
from configs.reefl import mnist as reefl_mnist

# Chosen on the validation clients, one sweep per regime (module docstring).
PER_METHOD_LR = {
    'frozen': {
        'reefl': 0.2, 'reefl_lastkd': 0.2, 'reefl_nokd': 0.2, 'reefl_nomod': 0.4,
        'reefl_maximum': 0.2, 'exclusivefl': 1.6, 'inclusivefl': 1.6,
        'inclusivefl_nomd': 1.6, 'depthfl': 1.6, 'depthfl_feddyn': 0.8,
        'scalefl': 1.6,
    },
    'lora': {
        'reefl': 0.2, 'reefl_lastkd': 0.2, 'reefl_nokd': 0.2, 'reefl_nomod': 0.2,
        'reefl_maximum': 0.2, 'exclusivefl': 0.4, 'inclusivefl': 0.4,
        'inclusivefl_nomd': 0.4, 'depthfl': 0.4, 'depthfl_feddyn': 0.2, 'scalefl': 0.4,
    },
}
REGIMES = tuple(PER_METHOD_LR)  # 'frozen', 'lora'
BACKBONE = 'runs/reefl_mnist_backbone.npz'  # where the pretraining command above writes


def get_config(regime: str = 'frozen'):
  """``frozen`` or ``lora``: the regime, at the rates chosen for it."""
  if regime not in REGIMES:
    raise ValueError(f"configs/reefl/mnist_pretrained.py:{regime}: expected one of "
                     f"{', '.join(REGIMES)}")
  config = reefl_mnist.get_config('quick')
  config.regimes = (regime,)
  config.methods = reefl_common.METHODS + reefl_common.BASELINES
  config.model.init_checkpoint = BACKBONE
  config.model.head_init_std = 0.02  # Ree and the heads as the code starts them
  return reefl_common.tuned(config, PER_METHOD_LR[regime], 'full', quick_rounds=50,
                            name='mnist_pretrained')
