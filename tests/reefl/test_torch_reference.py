"""The PyTorch reference round does the JAX ReeFL round's arithmetic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mg.federated import tiers
from mg.models import vit
from mg.reefl import torch_reference
from mg.reefl.algorithms import reefl

torch = pytest.importorskip('torch')

LOCAL = reefl.LocalConfig(batch_size=8)
HP = reefl.Hparams(rounds=10, lr=0.2, min_lr=0.001, kd_rounds=2.0)


def _cfg(**kw):
  base = dict(image_size=8, patch_size=4, in_chans=1, dim=16, depth=4, heads=2, num_exits=2,
              num_classes=5, init_std=0.0)
  return vit.ViTConfig(**dict(base, **kw))


def _data(n):
  x = jax.random.normal(jax.random.key(1), (n, 8, 8, 1))
  return np.asarray(x), np.asarray(jnp.arange(n) % 5, np.int32)


@pytest.mark.parametrize('variant', [{}, {'modulation': False}, {'lora_rank': 2}])
@pytest.mark.parametrize('tier', [0, 1])
def test_batch_loss_and_gradients_match_jax(variant, tier):
  cfg = _cfg(**variant)
  params = vit.init(jax.random.key(0), cfg)
  x, y = _data(6)
  kd_w = 0.7

  def jax_loss(p):
    logits = jnp.stack(vit.apply(p, x, cfg, tier))
    return reefl.local_loss(logits, y, jnp.ones(6), jnp.zeros((tier + 1,)), kd_w, LOCAL)[0]

  value, grads = jax.jit(jax.value_and_grad(jax_loss))(params)
  p = {k: v.requires_grad_(True) for k, v in torch_reference.to_torch(params).items()}
  images = torch.from_numpy(np.moveaxis(x, -1, 1).copy())
  logits = torch_reference.forward(p, images, cfg, tier)
  torch_value, _ = torch_reference.local_loss(logits, torch.from_numpy(y.astype(np.int64)),
                                              torch.zeros(tier + 1), kd_w, LOCAL)
  np.testing.assert_allclose(float(torch_value.detach()), float(value), rtol=1e-5)
  used = {k: v for k, v in p.items()
          if not (k.startswith('blocks/') and int(k.split('/')[1]) > cfg.exits[tier])}
  torch_grads = torch.autograd.grad(torch_value, list(used.values()), allow_unused=True)
  torch_grads = torch_reference.to_jax_layout(
      {k: g if g is not None else torch.zeros_like(used[k]) for k, g in zip(used, torch_grads)})
  jax_grads = vit.flatten(grads)
  for k, g in torch_grads.items():
    np.testing.assert_allclose(g, jax_grads[k], rtol=2e-4, atol=2e-6, err_msg=k)
  assert any(np.abs(g).max() > 1e-3 for g in torch_grads.values())


@pytest.mark.parametrize('regime', ['full', 'lora'])
def test_a_round_matches_the_jax_round(regime):
  """Same weights, clients, row orders: the PyTorch round gives the JAX round's parameters."""
  cfg = _cfg(lora_rank=2 if regime == 'lora' else 0)
  params = vit.init(jax.random.key(0), cfg)
  x, y = _data(80)
  counts = [20, 13, 17, 20]  # two batches each, the last partial
  rows = [np.arange(20) + 20 * i for i in range(4)]
  clients = [reefl.ClientData(jnp.asarray(r, jnp.int32), jnp.int32(c), i % cfg.num_exits, i)
             for i, (r, c) in enumerate(zip(rows, counts))]
  alg = reefl.reefl(cfg, regime=regime, local=LOCAL, hp=HP)
  key, sampled = jax.random.key(3), [0, 1, 2, 3]
  state, _ = tiers.train_round(alg, alg.init(params), clients, jnp.asarray(x), jnp.asarray(y),
                               sampled, key, 1)
  # JAX's row order of each client: the permutation its local training draws.
  orders = {c: np.asarray(reefl.epoch_order(jax.random.fold_in(key, c), counts[c], 20,
                                            LOCAL.batch_size)[0][:counts[c]])
            for c in sampled}
  reference = torch_reference.ReeFLRound(
      cfg, x, y, [r[:c] for r, c in zip(rows, counts)], local=LOCAL, hp=HP, regime=regime,
      clients_per_round=4)
  new = torch_reference.to_jax_layout(reference(reference.init(params), 1, sampled, orders))
  want = vit.flatten(state.params)
  for k, v in new.items():
    np.testing.assert_allclose(v, want[k], rtol=1e-4, atol=1e-5, err_msg=k)
  before = vit.flatten(params)
  changed = [k for k in new if not np.allclose(new[k], before[k])]
  assert changed and all(reefl.is_trainable(k, regime) for k in changed)
