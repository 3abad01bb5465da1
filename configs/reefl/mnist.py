r"""ReeFL on MNIST: a small ViT from scratch, the four ReeFL methods.

  python -m experiments.main --config=configs/reefl/mnist.py \
      --config.data.dir=DIR

The real MNIST *test* set (10,000 images; the split this config reads
from DIR): a stratified 20% (2,000) held out as the global test split, the
other 8,000 over 100 clients by Dirichlet(1.0) (80 images each, the code's
equal-size LDA), of which 10 are validation clients (800 images, never trained
on, for choosing settings) and 90 train, 10 per round, training client i in
budget tier i mod 4. A ViT
from scratch: 28x28, patch 7 (16 patches + CLS), width 64, 8 blocks of 4
heads, exits after blocks 2, 4, 6, 8; Ree at the code's widths (attention 16
over 8 heads, FFN 1.35). The code's local training (SGD 0.05 -> 0.001 cosine,
clip 1, batches of 32, one epoch) with the KD ramp over 30% of the rounds (the
code: 300 of 1,000). Linear weights N(0, 1/d_in) instead of the code's
N(0, 0.02^2), which keeps plain SGD on a small ViT at chance.

Ree and the exit heads start at the code's N(0, 0.02^2) (``model.head_init_std``)
while the backbone keeps N(0, 1/d_in): on the validation clients at ``:quick``
(one seed, every method at its rate below, ``configs/reefl/mnist_baselines.py``),
0.02 scored 65.9% mean over the 8 methods against 62.6% with the heads drawn as
the backbone, better for 6 of 8 and by 14.2 points for ReeFL (70.9 vs 56.8);
docs/reefl_results.md, "Initialisation of Ree and the heads".

Settings: each method's starting learning rate was chosen on the 10 validation
clients, never on the test split, by ``configs/reefl/sweeps/mnist.py`` (its
comparison and ablations: 0.025 / 0.05 / 0.1, DepthFL + FedDyn 0.05 / 0.1 / 0.2,
one seed) at the ``:quick`` budget of 50 rounds; both variants use those values
(``PER_METHOD_LR``); everything else is the code's. ``:quick`` (50 rounds, the
KD ramp over 15, 3 repeats) is the budget docs/reefl_results.md's tuned table was measured at.

Expected for ``:quick`` (3 seeds, tuned): docs/reefl_results.md, measured (and
the rates tuned) with the heads at N(0, 1/d_in), before ``head_init_std``. For the full
150 rounds (measured before validation clients, tuning and ``head_init_std``
existed, every method at
the code's 0.05, i.e. with ``--config.data.num_validation_clients=0`` and
``--config.per_method.<method>.lr=0.05``: all 100 clients training; 2-core
x86-64 CPU shared with other jobs at load average 7.6-20, 58 min 30 s
wall-clock, 17 min 46 s user CPU; the
30-minute target was not met under that load and was not measured on an idle
machine): accuracy on the 2,000 held-out images after 150 rounds, mean over
the 4 exits (exits 1-4; ensemble): ReeFL 78.2 (78.0 / 78.1 / 78.2 / 78.4; 78.1),
last-exit KD 78.9 (79.7), w/o KD 78.3 (79.2), w/o modulation 80.7 (79.8 / 81.0
/ 81.1 / 81.0; 80.7). One seed; seed-to-seed spread not measured. Exits 1-4
cost 1.9 / 3.8 / 5.7 / 7.7 M MACs per image; tiers hold 121k-421k parameters.
"""

from configs.reefl import common as reefl_common

# Chosen on the validation clients at the :quick budget (module docstring); the
# code's 0.05 (DepthFL + FedDyn: 0.1) is the middle of each grid.
PER_METHOD_LR = {
    'reefl': 0.1, 'reefl_lastkd': 0.1, 'reefl_nokd': 0.1, 'reefl_nomod': 0.05,
    'reefl_maximum': 0.05, 'exclusivefl': 0.05, 'inclusivefl': 0.1, 'inclusivefl_nomd': 0.1,
    'depthfl': 0.1, 'depthfl_feddyn': 0.05, 'scalefl': 0.1,
}


def get_config(variant: str = 'full'):
  """``full`` (150 rounds) or ``quick`` (50 rounds, the budget the settings were tuned at)."""
  config = reefl_common.get_config()
  config.data.name = 'mnist'
  config.data.source = 'auto'
  config.data.split = 'test'
  config.data.test = 'holdout'
  config.data.test_fraction = 0.2
  config.model.image_size = 28
  config.model.patch_size = 7
  config.model.dim = 64
  config.model.depth = 8
  config.model.heads = 4
  config.model.num_exits = 4
  config.model.init_std = 0.0  # N(0, 1/d_in): from scratch with SGD
  # Ree and the exit heads at the code's N(0, 0.02^2): preferred on the validation clients
  # over N(0, 1/d_in) (module docstring).
  config.model.head_init_std = 0.02
  config.model.lora_rank = 8
  config.model.lora_alpha = 16.0
  config.fl.rounds = 150
  config.fl.kd_rounds = 45.0
  config.eval_every = 25
  return reefl_common.tuned(config, PER_METHOD_LR, variant, quick_rounds=50,
                            name='mnist')
