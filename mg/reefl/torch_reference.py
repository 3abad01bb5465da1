r"""A plain PyTorch per-client loop of one ReeFL round: the speed reference.

``python -m experiments.bench --config=configs/reefl/mnist.py`` times this
beside the JAX round (``torch`` row, ``vs_torch`` in the round row). It does
the round of method ``reefl`` (docs/design.md s.10-11) the way a PyTorch user
would write it, as the public code does (royson/reefl):

* for each sampled client, one after another: copy the global model, train
  the parameters its tier holds and trains (``mg.reefl.algorithms.reefl``'s
  regimes) for one epoch of shuffled batches of ``batch_size`` (the last
  partial batch kept) with ``torch.optim.SGD`` at the round's rate,
  gradients clipped by value (``clip_grad_value_``); the loss is the
  cross-entropy at every exit of the tier plus the ramped KD term towards
  the dynamic teacher (the exit of lowest EMA cross-entropy);
* the server: each parameter the mean of the sampled clients that hold it,
  weighted by their example counts, summed in float64 as the code's
  ``aggregate_inplace_early_exit``; a parameter nobody holds keeps its value.

The model runs the truncated ViT of ``mg.models.vit`` block by block (one
tensor per block's parameter, as an ``nn.ModuleList`` holds them):
``F.conv2d`` patch embedding, ``F.layer_norm``, ``F.linear`` (weights in
PyTorch's (out, in) layout), ``F.scaled_dot_product_attention``, exact GELU,
and Ree after every block modulating the class token; the shared head runs at
the exits only. ``tests/reefl/test_torch_reference`` checks that loss,
gradients and a whole round agree with the JAX ones on the same weights,
batches and client orders.

Parameters are kept by the JAX per-block paths (``mg.models.vit.flatten``:
``blocks/3/q/kernel``), so the regimes' trainable sets and the tiers' held
sets are the JAX module's own functions.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from mg.models import vit
from mg.reefl.algorithms import reefl
from mg.torch_support import F, available, cpu_count, set_threads, torch  # noqa: F401 (re-export)


# ------------------------------------------------------------------- parameters


def _layout(path: str, array: np.ndarray, to_torch: bool) -> np.ndarray:
  """A leaf between layouts: conv HWIO <-> OIHW, linear (in, out) <-> (out, in)."""
  if array.ndim == 4:
    return array.transpose((3, 2, 0, 1) if to_torch else (2, 3, 1, 0))
  if path.endswith('/kernel') and array.ndim == 2:
    return array.T
  return array


def to_torch(params) -> dict:
  """JAX parameters (a tree, blocks stacked) -> ``{per-block path: tensor}``."""
  return {k: torch.from_numpy(np.ascontiguousarray(_layout(k, np.array(v, np.float32), True)))
          for k, v in vit.flatten(params).items()}


def to_jax_layout(flat: dict) -> dict:
  """``to_torch``'s inverse layout, as numpy arrays keyed by the same paths."""
  return {k: _layout(k, v.detach().numpy(), False) for k, v in flat.items()}


# ------------------------------------------------------------------------ model


def _linear(h, p, name):
  return F.linear(h, p[name + '/kernel'], p[name + '/bias'])


def _norm(h, p, name, eps):
  return F.layer_norm(h, h.shape[-1:], p[name + '/scale'], p[name + '/bias'], eps)


def _attention(q, k, v, heads: int, scale: float):
  b, _, width = q.shape
  split = lambda y: y.view(b, y.shape[1], heads, width // heads).transpose(1, 2)
  out = F.scaled_dot_product_attention(split(q), split(k), split(v), scale=scale)
  return out.transpose(1, 2).reshape(q.shape)


def _lora(h, p, name, cfg: vit.ViTConfig):
  """``x W + b`` plus, with LoRA, ``x A B alpha / r`` (``mg.models.vit.LoRADense``)."""
  out = _linear(h, p, name)
  if cfg.lora_rank:
    out = out + (h @ p[name + '/lora_a'] @ p[name + '/lora_b']) * (cfg.lora_alpha / cfg.lora_rank)
  return out


def block(p: dict, x, l: int, cfg: vit.ViTConfig):
  """Pre-norm transformer block ``l`` (``mg.models.vit.Block``)."""
  pre = f'blocks/{l}/'
  h = _norm(x, p, pre + 'ln1', cfg.eps)
  q, k, v = _lora(h, p, pre + 'q', cfg), _linear(h, p, pre + 'k'), _lora(h, p, pre + 'v', cfg)
  x = x + _linear(_attention(q, k, v, cfg.heads, (cfg.dim // cfg.heads) ** -0.5), p,
                  pre + 'proj')
  h = F.gelu(_linear(_norm(x, p, pre + 'ln2', cfg.eps), p, pre + 'fc1'))
  return x + _linear(h, p, pre + 'fc2')


def ree(p: dict, tokens, rcfg):
  """Ree over class tokens (B, n, d) -> ``m`` (B, n + 1, d), meta token first (``mg.models.ree``)."""
  b, n, d = tokens.shape
  x = torch.cat([p['ree/meta'].expand(b, 1, d), tokens], 1) + p['ree/pos'][:n + 1]
  for i in range(rcfg.depth):
    pre = f'ree/layers_{i}/'
    for _ in range(rcfg.recurrent_steps):
      h = _norm(x, p, pre + 'ln1', rcfg.eps)
      q, k, v = _linear(h, p, pre + 'qkv').chunk(3, dim=-1)
      x = x + _linear(_attention(q, k, v, rcfg.heads, rcfg.attn_dim ** -0.5), p, pre + 'out')
      h = F.gelu(_linear(_norm(x, p, pre + 'ln2', rcfg.eps), p, pre + 'fc1'))
      x = x + _linear(h, p, pre + 'fc2')
  return x


def head(p: dict, z, rcfg):
  """The shared exit head: LayerNorm then Linear."""
  return _linear(_norm(z, p, 'ree/head/ln', rcfg.eps), p, 'ree/head/dense')


def forward(p: dict, images, cfg: vit.ViTConfig, tier: int) -> list:
  """Logits (B, classes) at every exit up to ``tier``; ``images`` NCHW at the model's size."""
  rcfg, exits = cfg.ree, cfg.exits[:tier + 1]
  if images.shape[1] == 1 and cfg.in_chans == 3:
    images = images.expand(-1, 3, -1, -1)
  x = F.conv2d(images, p['patch/kernel'], p['patch/bias'], stride=cfg.patch_size)
  x = x.flatten(2).transpose(1, 2)
  b, _, d = x.shape
  x = torch.cat([p['cls'].expand(b, 1, d), x], 1) + p['pos']
  history, logits = [], []
  for l in range(exits[-1] + 1):
    x = block(p, x, l, cfg)
    z = x[:, 0]
    if cfg.modulation:
      m = ree(p, torch.stack(history + [z], 1), rcfg)
      x = torch.cat([m[:, -1:], x[:, 1:]], 1)
      history.append(z if cfg.raw_history else m[:, -1])
    else:
      history.append(z)
      if l in exits:
        m = ree(p, torch.stack(history, 1), rcfg)
    if l in exits:
      logits.append(head(p, m[:, 0] + z, rcfg))
  return logits


def local_loss(logits: list, labels, ema, kd_w: float, local: reefl.LocalConfig):
  """``(loss, ema)``: the exits' cross-entropies plus the ramped KD term (``reefl.local_loss``)."""
  ce = torch.stack([F.cross_entropy(out, labels) for out in logits])
  ema = local.ema * ema + (1.0 - local.ema) * ce.detach()
  loss = ce.sum()
  if len(logits) > 1 and local.kd_mode != 'none':
    teacher = len(logits) - 1 if local.kd_mode == 'last' else int(torch.argmin(ema))
    t = local.temperature
    target = F.log_softmax(logits[teacher].detach() / t, dim=-1)
    kd = sum(F.kl_div(F.log_softmax(out / t, dim=-1), target, reduction='batchmean',
                      log_target=True)
             for e, out in enumerate(logits) if e != teacher)
    loss = loss + kd_w * t * t * kd
  return loss, ema


# ------------------------------------------------------------------------ round


class ReeFLRound:
  """``state -> state``: one ReeFL round as a per-client PyTorch loop.

  ``state``: the global parameters, ``{per-block path: tensor}`` (``to_torch``).
  The caller's state is not modified.
  """

  def __init__(self, cfg: vit.ViTConfig, images, labels, client_rows: Sequence, *,
               local: reefl.LocalConfig, hp: reefl.Hparams, regime: str = 'full',
               clients_per_round: int = 10, seed: int = 0):
    """``images`` (N, H, W, C) and ``labels`` (N,); ``client_rows[i]``: client ``i``'s rows.

    Client ``i`` is in budget tier ``i mod E``, as the JAX runs.
    """
    if images.shape[1:3] != (cfg.image_size, cfg.image_size):
      raise ValueError(f'the PyTorch reference does not resize: images {images.shape[1:3]}, '
                       f'model {cfg.image_size}')
    self.cfg, self.local, self.hp, self.regime = cfg, local, hp, regime
    self.images = torch.from_numpy(np.array(np.moveaxis(np.asarray(images), -1, 1),
                                            np.float32, order='C'))  # a writable copy
    self.labels = torch.from_numpy(np.array(labels, np.int64))
    self.rows = [torch.from_numpy(np.asarray(r, np.int64)) for r in client_rows]
    self.per_round = clients_per_round
    self.generator = torch.Generator().manual_seed(seed)
    self._held: dict[int, list] = {}

  def init(self, params) -> dict:
    return to_torch(params)

  def tier(self, client: int) -> int:
    return client % self.cfg.num_exits

  def trained_paths(self, state: dict, tier: int) -> list:
    """The paths tier ``tier`` holds and trains in the regime (``reefl.is_trainable``)."""
    if tier not in self._held:
      last = self.cfg.exits[tier]
      self._held[tier] = [
          k for k in state if reefl.is_trainable(k, self.regime)
          and not (k.startswith('blocks/') and int(k.split('/')[1]) > last)]
    return self._held[tier]

  def train_client(self, state: dict, client: int, round_: int,
                   order: Optional[np.ndarray] = None) -> dict:
    """One epoch of client ``client``'s local training from ``state``; its uploads.

    ``order``: the order of its rows (default: a fresh random permutation).
    """
    tier, rows, local = self.tier(client), self.rows[client], self.local
    names = self.trained_paths(state, tier)
    trained = {k: state[k].clone().requires_grad_(True) for k in names}
    model = dict(state, **trained)
    lr = reefl.learning_rate(round_, self.hp.rounds, self.hp.lr, self.hp.min_lr)
    kd_w = reefl.kd_weight(round_, self.hp.kd_rounds)
    optimizer = torch.optim.SGD(list(trained.values()), lr=lr)
    order = (torch.randperm(len(rows), generator=self.generator) if order is None
             else torch.from_numpy(np.asarray(order, np.int64)))
    ema = torch.zeros(tier + 1)
    for start in range(0, len(rows), local.batch_size):
      ids = rows[order[start:start + local.batch_size]]
      loss, ema = local_loss(forward(model, self.images[ids], self.cfg, tier),
                             self.labels[ids], ema, kd_w, local)
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      if local.clip:
        torch.nn.utils.clip_grad_value_(trained.values(), local.clip)
      optimizer.step()
    return {k: v.detach() for k, v in trained.items()}

  def aggregate(self, state: dict, uploads: list, counts: list) -> dict:
    """Each uploaded path the count-weighted mean of its uploaders, in float64."""
    sums, totals = {}, {}
    for tree, count in zip(uploads, counts):
      for k, v in tree.items():
        sums[k] = sums.get(k, 0.0) + v.double() * count
        totals[k] = totals.get(k, 0) + count
    return dict(state, **{k: (s / totals[k]).float() for k, s in sums.items()})

  def sample(self) -> list:
    return torch.randperm(len(self.rows), generator=self.generator)[:self.per_round].tolist()

  def __call__(self, state: dict, round_: int = 1, sampled: Optional[Sequence[int]] = None,
               orders: Optional[dict] = None) -> dict:
    """One round from ``state``: the new global parameters.

    ``sampled``: the clients (default: ``clients_per_round`` at random);
    ``orders``: ``{client: row order}`` (default: random per client).
    """
    sampled = self.sample() if sampled is None else list(sampled)
    orders = orders or {}
    uploads = [self.train_client(state, c, round_, orders.get(c)) for c in sampled]
    return self.aggregate(state, uploads, [len(self.rows[c]) for c in sampled])
