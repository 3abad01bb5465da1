r"""Pretrains a ReeFL backbone centrally, for the ``frozen`` and ``lora`` regimes.

  python -m experiments.pretrain --config=configs/reefl/mnist.py \
      --config.data.name=cifar10 --config.data.split=train --config.data.dir=DIR \
      --config.model.in_chans=1 --out=runs/reefl_mnist_backbone.npz \
      [--epochs=10 --lr=1e-3 --batch=128]

Trains the config's backbone as a plain ViT, as the paper's DeiT was trained:
one head on the last block's class token, its cross-entropy alone, Adam; no
Ree, no modulation, no early exit (``mg.reefl.pretrain``). On ``config.data``
(90% of ``data.split``; the other 10% measures it, printed after every epoch);
then writes the backbone (not the head) as ``{flat path: array}`` to ``--out``.
The images are fitted to the model (``mg.reefl.pretrain.fit_images``: grey by
luma when ``model.in_chans=1``, centre-cropped when larger), so the example pretrains ``configs/reefl/mnist.py``'s 28x28 grey
ViT on CIFAR-10 for ``configs/reefl/mnist_pretrained.py``. Use the result with
``--config.model.init_checkpoint=...`` on another dataset, as the paper starts
from an ImageNet-pretrained DeiT (which cannot be downloaded here).
"""

import time

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'A ReeFL config.', lock_config=True)
_OUT = flags.DEFINE_string('out', None, 'Where to write the backbone (.npz).')
_EPOCHS = flags.DEFINE_integer('epochs', 10, 'Passes over the data.')
_LR = flags.DEFINE_float('lr', 1e-3, 'Adam step size.')
_BATCH = flags.DEFINE_integer('batch', 128, 'Batch size.')


def main(argv):
  cli.no_arguments(argv)
  cli.quiet_logs()
  from mg.reefl import pretrain  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  def progress(epoch, loss, acc):
    print(f'epoch {epoch}/{_EPOCHS.value}: training loss {loss:.3f}, '
          f'held-out accuracy {100 * acc:.2f}% ({time.perf_counter() - start:.0f} s)',
          flush=True)

  try:
    acc = pretrain.pretrain(_CONFIG.value, _OUT.value, epochs=_EPOCHS.value, lr=_LR.value,
                            batch=_BATCH.value, progress=progress)
  except (*cli.USER_ERRORS, OSError) as e:
    cli.exit_with(e)
  print(f'wrote {_OUT.value}: accuracy on the held-out 10% {100 * acc:.2f}% '
        f'({time.perf_counter() - start:.0f} s)')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'out'])
  app.run(main, flags_parser=cli.parse_flags)
