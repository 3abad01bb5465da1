r"""A plain PyTorch per-client loop of one MetaGater round: the speed reference.

``python -m experiments.bench`` times this beside the JAX round mappings
(``torch`` row, ``vs_torch`` in every JAX row). It does the round's arithmetic
(docs/design.md s.3, Algorithm 1 steps 2-9) the way a PyTorch user would write it:

* sample ``T`` tasks without replacement; for each, one after another, ``K``
  steps of ``z <- z - eta_l (grad L(z; B_k) + lambda (z - x_md))`` from
  ``z = x_md`` on minibatches drawn with replacement
  (``mg.federated.local.local_solve``), with straight-through Gumbel gates
  (``mg.models.gating``: one logistic draw per gate logit);
* the mean of the ``z_i``, the meta-gradient ``G = lambda (x_md - mean z)``
  and the accelerated proximal step of Ghadimi & Lan with the group-lasso
  prox on the gate outputs (``mg.optim.accelerate``, ``mg.prox``).

The network is ``mg.models.Model``'s own layer list run with
``torch.nn.functional`` (convolutions NCHW, OIHW kernels; a dense layer after
a feature map reads it in NHWC order, as ``mg.models.networks.flatten``), so the
architecture is the JAX model's by construction; ``tests/test_torch_reference``
checks that loss and gradients agree on the same weights and gate noise.

One deliberate difference: ``F.max_pool2d`` sends a tied window's gradient to
one element where ``mg.models.networks.max_pool`` splits it evenly. Ties of
nonzero values do not occur in practice; a window of zeros (a closed gate)
changes only that gate's straight-through gradient. The JAX arithmetic in
PyTorch (``amax`` over a reshape) ran its round 1.6x slower (CNN-4, 20 tasks,
K = 1: 118 vs 189 images/s under load 4.7, same process), so the reference
keeps the faster, plain ``F.max_pool2d``: the comparison does not favour JAX.

torch is optional (not in requirements.txt). ``available()`` says whether it
imports; ``set_threads`` sets PyTorch's threads, by default to the CPUs this
process may use. Both come from ``mg.torch_support``, shared with ReeFL's
reference. On an oversubscribed machine 1 thread ran faster (the notes of
``experiments.bench``).
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import numpy as np

from mg.torch_support import F, available, cpu_count, set_threads, torch  # noqa: F401 (re-export)


# ------------------------------------------------------------------- parameters


def to_torch(params) -> dict:
  """JAX ``{'theta', 'phi'}`` -> ``{'theta/conv1/kernel': tensor, ...}``.

  Convolution kernels go from HWIO to OIHW; every other leaf keeps its layout
  (a dense kernel stays (d_in, d_out)).
  """
  flat = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    name = '/'.join(str(getattr(k, 'key', k)) for k in path)
    array = np.array(leaf, np.float32)  # a writable copy
    if array.ndim == 4:
      array = array.transpose(3, 2, 0, 1)
    flat[name] = torch.from_numpy(np.ascontiguousarray(array))
  return flat


def to_jax_layout(flat: dict) -> dict:
  """``to_torch``'s inverse layout, as numpy arrays keyed by the same paths."""
  out = {}
  for name, tensor in flat.items():
    array = tensor.detach().numpy()
    out[name] = array.transpose(2, 3, 1, 0) if array.ndim == 4 else array
  return out


def to_torch_images(x, model) -> 'torch.Tensor':
  """(..., H, W, C) images -> NCHW for a convolutional model, (..., H*W*C) for an MLP."""
  x = np.asarray(x, np.float32)
  if model.layers[0].kind == 'conv':
    x = np.moveaxis(x, -1, -3)
  else:
    x = x.reshape(x.shape[:-3] + (-1,))
  return torch.from_numpy(np.array(x, np.float32, order='C'))  # a writable copy


# ------------------------------------------------------------------------ model


def _dense(x, p, name):
  return torch.addmm(p[name + '/bias'], x, p[name + '/kernel'])


def gate_mask(p, layer: str, h, noise, tau: float):
  """Straight-through gate of ``layer`` on input ``h`` (``mg.models.gating``)."""
  s = h.mean(dim=(2, 3)) if h.ndim == 4 else h
  z = _dense(F.relu(_dense(s, p, f'phi/{layer}/hidden')), p, f'phi/{layer}/out')
  y = z + (noise(z.shape) if callable(noise) else noise[layer])
  soft = torch.sigmoid(y / tau)
  return (y > 0).to(y.dtype) + (soft - soft.detach())


def logistic_noise(shape, generator=None):
  """A standard logistic draw ``log u - log(1 - u)`` (``jax.random.logistic``)."""
  u = torch.rand(shape, generator=generator).clamp_(1e-7, 1 - 1e-7)
  return torch.log(u) - torch.log1p(-u)


def forward(model, p: dict, x, noise, tau: float = 1.0):
  """Logits of ``model`` (an ``mg.models.Model``) with training gates.

  Args:
    model: the JAX model whose layer list is run.
    p: ``to_torch`` parameters.
    x: NCHW images (flattened for an MLP).
    noise: ``{layer: (B, C) logistic noise}`` or a callable ``shape -> noise``.
    tau: Gumbel-softmax temperature.
  """
  h = x
  for spec in model.layers:
    w = f'theta/{spec.name}'
    if spec.kind == 'conv':
      out = F.conv2d(h, p[w + '/kernel'], p[w + '/bias'], padding='same')
    else:
      if h.ndim == 4:
        h = h.permute(0, 2, 3, 1).flatten(1)  # NHWC order, as the JAX flatten
      out = _dense(h, p, w)
    if spec.relu:
      out = F.relu(out)
    if spec.name in model.gated_layers:
      m = gate_mask(p, spec.name, h, noise, tau)
      out = out * (m[:, :, None, None] if out.ndim == 4 else m)
    if spec.pool == 'max':
      out = F.max_pool2d(out, 2)
    elif spec.pool == 'mean':
      out = out.mean(dim=(2, 3))
    h = out
  return h


def loss(model, p: dict, batch, noise, tau: float = 1.0):
  """Weighted mean cross-entropy (``mg.federated.server.task_loss``)."""
  x, y, w = batch
  ce = F.cross_entropy(forward(model, p, x, noise, tau), y, reduction='none')
  return (w * ce).sum() / torch.clamp(w.sum(), min=1.0)


# ------------------------------------------------------------------------ round


def group_lasso_(p: dict, layer: str, threshold: float) -> None:
  """In place: the group-lasso prox of ``phi/<layer>/out`` (``mg.prox.group_lasso``)."""
  kernel, bias = p[f'phi/{layer}/out/kernel'], p[f'phi/{layer}/out/bias']
  norms = torch.sqrt(kernel.square().sum(0) + bias.square())
  keep = norms > threshold
  factor = torch.where(keep, 1.0 - threshold / torch.where(keep, norms, 1.0), 0.0)
  kernel.mul_(factor)
  bias.mul_(factor)


def eta_at(eta: str, t: int, beta: float) -> float:
  """``eta_t`` of ``mg.metagater.algorithms.metagater.eta_schedule``."""
  return {'beta': beta, 'nonconvex': (1.0 + 0.5 / (t + 1.0)) * beta,
          'convex': t * beta / 2.0}[eta]


class MetaGaterRound:
  """``state -> state``: one MetaGater round as a per-client PyTorch loop.

  ``state = {'x_md', 'x_prev', 'x_ag': flat parameters, 'count': rounds done}``
  (``mg.optim.AccelerateState`` plus the broadcast point). The caller's state
  is not modified.
  """

  def __init__(self, model, tasks, *, tasks_per_round: int, local_steps: int,
               batch_size: int, tau: float, lam: float, local_lr: float, beta: float,
               rho: float = 0.0, regularizer: str = 'group_lasso',
               alpha: Optional[float] = None, eta: str = 'convex', seed: int = 0):
    """``tasks``: a ``mg.data.TaskArrays`` (x (T, N, H, W, C), y, mask, count).

    ``batch_size == 0``: full batch (each step reads the padded task and its mask).
    """
    self.model = model
    self.x = to_torch_images(tasks.x, model)
    self.y = torch.tensor(np.asarray(tasks.y), dtype=torch.int64)
    self.mask = torch.tensor(np.asarray(tasks.mask), dtype=torch.float32)
    self.count = [max(int(c), 1) for c in np.asarray(tasks.count)]
    self.tasks_per_round, self.steps, self.batch = tasks_per_round, local_steps, batch_size
    self.tau, self.lam, self.lr, self.beta, self.rho = tau, lam, local_lr, beta, rho
    self.alpha, self.eta = alpha, eta
    self.prox = regularizer if model.gated_layers else 'none'
    self.generator = torch.Generator().manual_seed(seed)

  def init(self, params) -> dict:
    flat = to_torch(params)
    return {'x_md': flat, 'x_prev': {k: v.clone() for k, v in flat.items()},
            'x_ag': {k: v.clone() for k, v in flat.items()}, 'count': 0}

  def _noise(self, shape):
    return logistic_noise(shape, self.generator)

  def local_solve(self, x_md: dict, task: int):
    """``(z, mean loss)``: K proximal gradient steps from ``x_md`` on task ``task``."""
    names = list(x_md)
    z = [v.clone().requires_grad_(True) for v in x_md.values()]
    total = 0.0
    for _ in range(self.steps):
      if self.batch == 0:  # full batch: the padded task and its mask
        batch = (self.x[task], self.y[task], self.mask[task])
      else:
        rows = torch.randint(self.count[task], (self.batch,), generator=self.generator)
        batch = (self.x[task][rows], self.y[task][rows], torch.ones(self.batch))
      value = loss(self.model, dict(zip(names, z)), batch, self._noise, self.tau)
      grads = torch.autograd.grad(value, z)
      with torch.no_grad():
        z = [(p - self.lr * (g + self.lam * (p - p0))).requires_grad_(True)
             for p, g, p0 in zip(z, grads, x_md.values())]
      total += value.detach()
    return dict(zip(names, (p.detach() for p in z))), total / self.steps

  def _prox_step(self, x: dict, grad: dict, step: float) -> dict:
    out = {k: v - step * grad[k] for k, v in x.items()}
    if self.prox == 'group_lasso':
      for layer in self.model.gated_layers:
        group_lasso_(out, layer, step * self.rho)
    elif self.prox == 'lasso':
      for k, v in out.items():
        if k.startswith('phi/') and '/out/' in k:
          v.sub_(v.clamp(-step * self.rho, step * self.rho))
    return out

  def __call__(self, state: dict) -> tuple[dict, dict]:
    """One round from ``state``: ``(new state, diagnostics)``."""
    x_md = state['x_md']
    tasks = torch.randperm(self.x.shape[0], generator=self.generator)[:self.tasks_per_round]
    z_sum = {k: torch.zeros_like(v) for k, v in x_md.items()}
    loss_sum = 0.0
    for task in tasks.tolist():
      z, task_loss = self.local_solve(x_md, task)
      for k, v in z.items():
        z_sum[k] += v
      loss_sum += task_loss
    n = len(tasks)
    with torch.no_grad():
      grad = {k: self.lam * (v - z_sum[k] / n) for k, v in x_md.items()}
      t = state['count'] + 1
      eta_t = eta_at(self.eta, t, self.beta)
      a = 2.0 / (t + 2.0) if self.alpha is None else self.alpha
      x_prev = self._prox_step(state['x_prev'], grad, eta_t)
      x_ag = self._prox_step(x_md, grad, self.beta)
      new_md = {k: (1 - a) * x_ag[k] + a * x_prev[k] for k in x_md}
      diagnostics = {
          'loss': float(loss_sum / n),
          'meta_grad_norm': math.sqrt(sum(float(g.square().sum()) for g in grad.values())),
          'finite': all(bool(torch.isfinite(v).all()) for v in new_md.values())}
    return {'x_md': new_md, 'x_prev': x_prev, 'x_ag': x_ag, 'count': t}, diagnostics


def value_and_grad(model, params, batch, noise: dict, tau: float = 1.0):
  """``(loss, grads in the JAX layout)`` of one batch: the cross-check of the tests.

  ``batch`` is ``(x NHWC, y, w)`` as numpy arrays; ``noise`` maps each gated
  layer to its (B, C) logistic draw.
  """
  p = {k: v.requires_grad_(True) for k, v in to_torch(params).items()}
  x, y, w = batch
  batch = (to_torch_images(x, model), torch.tensor(np.asarray(y), dtype=torch.int64),
           torch.tensor(np.asarray(w), dtype=torch.float32))
  value = loss(model, p, batch, {k: torch.tensor(np.asarray(v), dtype=torch.float32)
                                 for k, v in noise.items()}, tau)
  grads = torch.autograd.grad(value, list(p.values()))
  return float(value.detach()), to_jax_layout(dict(zip(p, grads)))

