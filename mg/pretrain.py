"""Central pretraining of the ViT backbone (``python -m experiments.pretrain``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mg import reefl_run
from mg.data import dirichlet
from mg.models import vit
from mg.models.tree_paths import flatten


def pretrain(config, out: str, *, epochs: int, lr: float, batch: int, seed: int = 0) -> float:
  """Trains every exit of the config's ViT with Adam; writes the backbone to ``out``.

  Returns the last exit's accuracy on a held-out 10% of the images.
  """
  d = config.data
  images, labels = dirichlet.read_split(d.name, d.source, d.dir, d.split)
  rng = np.random.default_rng(seed)
  kept, held = dirichlet.stratified_holdout(labels, 0.1, rng)
  cfg = reefl_run.model_config(config)
  params = reefl_run.initial_params(config, cfg, jax.random.PRNGKey(seed))
  tx = optax.adam(lr)
  opt = tx.init(params)

  def loss_fn(p, x, y):
    return sum(optax.softmax_cross_entropy_with_integer_labels(l, y).mean()
               for l in vit.apply(p, x, cfg))

  @jax.jit
  def step(p, o, x, y):
    g = jax.grad(loss_fn)(p, x, y)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o

  predict = jax.jit(lambda p, x: jnp.argmax(vit.apply(p, x, cfg)[-1], -1))
  for _ in range(epochs):
    order = rng.permutation(kept)
    for i in range(0, len(order) - batch + 1, batch):
      idx = order[i:i + batch]
      params, opt = step(params, opt, jnp.asarray(images[idx]), jnp.asarray(labels[idx]))
  correct = sum(int(jnp.sum(predict(params, jnp.asarray(images[held[i:i + 500]]))
                            == labels[held[i:i + 500]])) for i in range(0, len(held), 500))
  backbone = {k: np.asarray(v) for k, v in flatten(params).items() if not k.startswith('ree/')}
  np.savez(out, **backbone)
  return correct / len(held)
