r"""The sweep that chooses each method's learning rate in configs/reefl/mnist_pretrained.py.

  python -m experiments.sweep --config=configs/reefl/mnist_pretrained.py:frozen \
      --config.data.dir=DIR --config.eval_every=50 \
      --sweep=configs/reefl/sweeps/mnist_pretrained.py:all --workdir=runs/sweep-frozen
  (and :lora, --workdir=runs/sweep-lora)

``configs/reefl/sweeps/mnist.py``'s studies (every method, one seed, its own
starting learning rate only) on a grid shifted up and widened to seven octaves:
0.05 / 0.1 / ... / 3.2 (DepthFL + FedDyn 0.1 / ... / 6.4), 77 members per
regime. With the backbone fixed, only Ree or the exit heads (and LoRA factors)
train, and the best rates are higher than from scratch: the MNIST grid (0.025 /
0.05 / 0.1) rose monotonically on the validation clients (frozen ReeFL 38.8 /
46.9 / 53.8%), and so did the frozen head baselines up to 1.6 (ExclusiveFL 37.0
/ 43.6 / 49.0 / 53.7 / 57.5 / 60.1%). The grid was widened by an octave at a
time, for every method and both regimes alike, until every method's best lay
inside it (docs/reefl_results.md, "MNIST from a backbone pretrained on CIFAR-10"). Chosen on
the 10 validation clients' accuracy, mean over exits; one sweep per regime (the
best settings differ by regime). Variants as the MNIST sweep's: ``comparison``,
``ablations``, ``all``, or methods joined by ``+``.
"""

from configs.reefl.sweeps import mnist as reefl_mnist

LR = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
FEDDYN_LR = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4)


def get_sweep(variant: str = 'all'):
  return reefl_mnist.get_sweep(variant, lr=LR, feddyn_lr=FEDDYN_LR,
                               name='mnist_pretrained')
