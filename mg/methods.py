"""The compared methods by name: model, federated algorithm, target protocol.

Names (configs and ``results.json``): ``fedavg``, ``perfedavg_fo``,
``perfedavg_hf``, ``metagater_nogate``, ``metagater``, ``metasnip``, and the
optional ``metagater_unaccelerated`` (MetaGater with ``alpha_t = 1``: plain
proximal steps, for the acceleration comparison). Every method uses the same
data, the same backbone architecture and the same target protocol
(DESIGN.md s.5); MetaSNIP trains nothing of its own: it prunes the backbone
of MetaGater w/o gating at MetaGater's mean sparsity.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

from mg import adapt
from mg import models
from mg.algorithms.fedavg import fedavg
from mg.algorithms.metagater import metagater
from mg.algorithms.perfedavg import perfedavg
from mg.federated.mapping import Algorithm

METHODS = ('fedavg', 'perfedavg_fo', 'perfedavg_hf', 'metagater_nogate',
           'metagater', 'metasnip', 'metagater_unaccelerated')
# Methods that adapt another method's meta-model instead of training their own.
BACKBONE_OF = {'metasnip': 'metagater_nogate'}


class Method(NamedTuple):
  """One compared method.

  Attributes:
    name: the reported name.
    model: its network (gated for MetaGater, plain backbone otherwise).
    algorithm: its federated algorithm, or None (MetaSNIP).
    hparams: keyword arguments of ``algorithm.init`` besides the parameters.
    adapt: ``adapt(params, support, key, sparsity) -> (params_j, info)`` at a
      target (``sparsity`` is MetaSNIP's target sparsity; ignored by others).
    local_steps: local updates per round (Table 1's column).
    images_per_step: images one local step reads per task, per batch row.
  """
  name: str
  model: models.Model
  algorithm: Optional[Algorithm]
  hparams: dict
  adapt: Callable
  local_steps: int
  images_per_step: int


def build_model(config, info, gating: bool) -> models.Model:
  """The configured network for a dataset ``info`` (input shape, classes)."""
  gated = tuple(config.model.gated_layers) or None
  return models.build(config.model.name, input_shape=tuple(info['input_shape']),
                      num_classes=info['num_classes'], gating=gating,
                      gated_layers=gated if gating else None,
                      gate_hidden=config.model.gate_hidden)


def build(name: str, config, info, scan_steps: bool = False) -> Method:
  """The method ``name`` for ``config`` on a dataset described by ``info``."""
  if name not in METHODS:
    raise ValueError(f'unknown method {name!r}; expected one of {METHODS}')
  meta, a = config.meta, config.adapt
  gated = name in ('metagater', 'metagater_unaccelerated')
  model = build_model(config, info, gating=gated)
  common = dict(local_steps=meta.local_steps, batch_size=meta.batch_size,
                tau=config.model.tau, scan_steps=scan_steps)
  one_step = functools.partial(_one_step, model, lr=a.lr, batch_size=a.batch_size)

  if name == 'fedavg':
    return Method(name, model, fedavg(model, **common),
                  dict(local_lr=meta.local_lr), one_step, meta.local_steps, 1)
  if name in ('perfedavg_fo', 'perfedavg_hf'):
    hf = name == 'perfedavg_hf'
    return Method(name, model, perfedavg(model, hessian_free=hf, **common),
                  dict(alpha=config.perfedavg.alpha_hf if hf else config.perfedavg.alpha,
                       beta=config.perfedavg.beta),
                  one_step, meta.local_steps, 3 if hf else 2)
  if name == 'metagater_nogate':
    return Method(name, model, metagater(model, regularizer='none', alpha=meta.alpha,
                                         eta=meta.eta, name=name, **common),
                  _meta_hparams(config), one_step, meta.local_steps, 1)
  if name == 'metasnip':
    gated_layers = build_model(config, info, gating=True).gated_layers
    snip = functools.partial(_snip, model, lr=a.lr, batch_size=a.batch_size,
                             layers=gated_layers)
    return Method(name, model, None, {}, snip, meta.local_steps, 1)
  plain = name == 'metagater_unaccelerated'
  alpha, eta = (1.0, 'beta') if plain else (meta.alpha, meta.eta)
  two_stage = functools.partial(_two_stage, model, lr=a.lr, keep_frac=a.keep_frac,
                                batch_size=a.batch_size, tau=config.model.tau)
  return Method(name, model,
                metagater(model, regularizer=meta.regularizer, alpha=alpha, eta=eta,
                          name=name, **common),
                _meta_hparams(config, rho=True), two_stage, meta.local_steps, 1)


def _meta_hparams(config, rho=False):
  meta = config.meta
  hp = dict(lam=meta.lam, local_lr=meta.local_lr, beta=meta.beta)
  if rho:
    hp['rho'] = meta.rho if meta.regularizer != 'none' else 0.0
  return hp


def _one_step(model, params, support, key, sparsity, *, lr, batch_size):
  del sparsity
  return adapt.one_step(model, params, support, key, lr=lr, batch_size=batch_size), {}


def _two_stage(model, params, support, key, sparsity, **kwargs):
  del sparsity
  params_j, keep = adapt.two_stage(model, params, support, key, **kwargs)
  return params_j, {'kept_channels': keep}


def _snip(model, params, support, key, sparsity, **kwargs):
  params_j, kept = adapt.snip(model, params, support, key, sparsity=sparsity, **kwargs)
  return params_j, {'kept_weights': kept}
