"""Central pretraining of the ViT backbone (``python -m experiments.pretrain``).

As the paper and the public code start: a plain ViT, one ``LayerNorm +
Linear`` head on the last block's class token, cross-entropy on it alone; no
Ree, no modulation, no early exit (the code federates an ImageNet DeiT with
its head deleted). Only the backbone is written, so nothing of the exits is
pretrained: the earlier blocks' class tokens are not trained to be read by a
head, and no block has seen a modulated class token.
"""

from __future__ import annotations

import math
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from mg.reefl import config as reefl_config
from mg.data import dirichlet
from mg.errors import ConfigError
from mg.harness import divergence
from mg.harness import fields
from mg.models import exit_heads
from mg.models import pretrained
from mg.models import vit


# ITU-R BT.601 luma, the usual RGB -> grey weights.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def fit_images(images: np.ndarray, image_size: int, channels: int) -> np.ndarray:
  """Pretraining images (N, H, W, C) in the shape a target model reads.

  So a backbone can be pretrained on one dataset for a model of another's shape
  (CIFAR-10's 32x32 colour images for MNIST's 28x28 grey model): colour becomes
  grey by BT.601 luma when the model reads one channel, and larger images are
  centre-cropped to ``image_size`` (smaller ones are left to the model, which
  resizes them on the fly, :func:`mg.models.vit.embed`).
  """
  c = images.shape[-1]
  if channels == 1 and c == 3:
    images = images @ _LUMA[:, None]
  elif channels != c:
    raise ConfigError(f'model.in_chans={channels}: cannot fit {c}-channel images to it '
                      '(1 greys colour images; 0 takes the dataset\'s channels)')
  h, w = images.shape[1:3]
  if h > image_size or w > image_size:
    top, left = max(h - image_size, 0) // 2, max(w - image_size, 0) // 2
    images = images[:, top:top + min(h, image_size), left:left + min(w, image_size)]
  return np.ascontiguousarray(images, np.float32)


def validate(config, out: str, *, epochs: int, lr: float, batch: int) -> None:
  """Raises ``ConfigError`` for a pretraining that cannot run or write its backbone.

  The config as ``experiments.main`` checks it (its images fitted to the model),
  the flags, and ``out``: a ``.npz`` file in a folder that exists.
  """
  reefl_config.validate(config, pretraining=True)
  fields.check(isinstance(epochs, int) and epochs >= 1,
               f'--epochs={epochs}: expected an integer >= 1')
  fields.check(isinstance(batch, int) and batch >= 1,
               f'--batch={batch}: expected an integer >= 1')
  fields.check(fields.is_number(lr) and lr > 0, f'--lr={lr}: expected a number > 0')
  fields.check(out.endswith('.npz') and not os.path.isdir(out),
               f'--out={out}: expected a .npz file to write the backbone to')
  folder = os.path.dirname(os.path.abspath(out))
  fields.check(os.path.isdir(folder), f'--out={out}: its folder {folder} does not exist; '
               'create it first')


def initial_loss(cfg: vit.ViTConfig) -> float:
  """The cross-entropy at initialisation: ``ln(C)``."""
  return math.log(cfg.num_classes)


def plain_vit(cfg: vit.ViTConfig) -> exit_heads.EarlyExitViT:
  """The ViT with one head, after its last block (the backbone's model; no Ree)."""
  return exit_heads.EarlyExitViT(cfg._replace(modulation=False), last_only=True)


def plain_init(config, cfg: vit.ViTConfig, key) -> dict:
  """:func:`plain_vit`'s parameters; the backbone from ``model.init_checkpoint`` when set."""
  params = plain_vit(cfg).init(key, vit.dummy_images(cfg))['params']
  if config.model.init_checkpoint:
    params = pretrained.load_backbone(config.model.init_checkpoint, params, cfg)
  return params


def pretrain(config, out: str, *, epochs: int, lr: float, batch: int, seed: int = 0,
             progress: Callable[[int, float, float], None] | None = None) -> float:
  """Trains the config's backbone as a plain ViT with Adam (module docstring); writes it to ``out``.

  The images are :func:`fit_images` to the model (``model.in_chans`` sets its
  channels, else the dataset's). Returns the head's accuracy on a held-out
  10% of the images; ``progress(epoch, mean training loss, that accuracy)``
  is called after each epoch.

  Nothing is written when an epoch's loss diverges: not finite, or above the
  harness's bound (``mg.harness.divergence``) times the loss at
  initialisation (:func:`initial_loss`), an absolute reference that a run
  exploding in its first epoch cannot raise.

  Raises:
    ConfigError: a bad config or flag (:func:`validate`), a batch larger than
      the training images, or a diverged loss.
  """
  validate(config, out, epochs=epochs, lr=lr, batch=batch)
  d = config.data
  images, labels = dirichlet.read_split(d.name, d.source, d.dir, d.split)
  rng = np.random.default_rng(seed)
  kept, held = dirichlet.stratified_holdout(labels, 0.1, rng)
  fields.check(batch <= len(kept), f'--batch={batch} is more than the {len(kept)} training '
               f'images (90% of {d.name} {d.split}); use at most {len(kept)}')
  cfg = reefl_config.model_config(config, modulation=False)
  images = fit_images(images, cfg.image_size, cfg.in_chans)
  params = plain_init(config, cfg, jax.random.PRNGKey(seed))
  model = plain_vit(cfg)
  logits_of = lambda p, x: model.apply({'params': p}, x)[0]
  tx = optax.adam(lr)
  opt = tx.init(params)

  def loss_fn(p, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits_of(p, x), y).mean()

  @jax.jit
  def step(p, o, x, y):
    loss, g = jax.value_and_grad(loss_fn)(p, x, y)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o, loss

  predict = jax.jit(lambda p, x: jnp.argmax(logits_of(p, x), -1))

  def held_out_accuracy(p):
    correct = sum(int(jnp.sum(predict(p, jnp.asarray(images[held[i:i + 500]]))
                              == labels[held[i:i + 500]])) for i in range(0, len(held), 500))
    return correct / len(held)

  for epoch in range(epochs):
    order = rng.permutation(kept)
    losses = []
    for i in range(0, len(order) - batch + 1, batch):
      idx = order[i:i + batch]
      params, opt, loss = step(params, opt, jnp.asarray(images[idx]), jnp.asarray(labels[idx]))
      losses.append(loss)
    mean_loss = float(jnp.mean(jnp.stack(losses)))
    if divergence.diverged(mean_loss, True, initial_loss(cfg)):
      raise ConfigError(f'pretraining diverged: the training loss is {mean_loss:.4g} in epoch '
                        f'{epoch + 1} (at initialisation about {initial_loss(cfg):.3g}); lower '
                        f'the step size (lr={lr}); nothing was written')
    acc = held_out_accuracy(params)
    if progress is not None:
      progress(epoch + 1, mean_loss, acc)
  backbone = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep='/').items()
              if pretrained.is_backbone(k)}
  np.savez(out, **backbone)  # the blocks stacked, as the model holds them
  return acc
