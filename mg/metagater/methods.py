"""The compared methods by name: model, federated algorithm, target protocol.

Names (configs and ``results.json``): ``fedavg``, ``perfedavg_fo``,
``perfedavg_hf``, ``metagater_nogate``, ``metagater``, ``metasnip``,
``metasnip_filters``, and the optional ``metagater_unaccelerated`` (MetaGater
with ``alpha_t = 1``: plain proximal steps, for the acceleration comparison).
Every method uses the same data, the same backbone architecture and the same
target protocol (docs/design.md s.5); the MetaSNIP variants train nothing of their
own: they prune the backbone of MetaGater w/o gating at MetaGater's mean
channel sparsity, ``metasnip`` weight by weight (unstructured), ``metasnip_filters``
whole filters by summed saliency (structured: dense hardware saves the work).

Each method reads its own hyperparameters (``settings``): the field
``per_method.<method>.<name>`` when set, else the shared field it defaults to
(``SHARED``). Per-FedAvg adapts at a target with its own inner step alpha, as
Fallah et al. personalise; the others with ``adapt_lr``.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

from mg.metagater import adapt
from mg import models
from mg import per_method
from mg import report
from mg.metagater.algorithms.fedavg import fedavg
from mg.metagater.algorithms.metagater import metagater
from mg.metagater.algorithms.perfedavg import perfedavg
from mg.federated.mapping import Algorithm

METHODS = ('fedavg', 'perfedavg_fo', 'perfedavg_hf', 'metagater_nogate',
           'metagater', 'metasnip', 'metasnip_filters', 'metagater_unaccelerated')
# The names the paper and the reports use (``mg.report.display_name``).
DISPLAY_NAMES = {
    'fedavg': 'FedAvg',
    'perfedavg_fo': 'Per-FedAvg (FO)',
    'perfedavg_hf': 'Per-FedAvg (HF)',
    'metagater_nogate': 'MetaGater w/o gating',
    'metagater': 'MetaGater',
    'metasnip': 'MetaSNIP',
    'metasnip_filters': 'MetaSNIP (filters)',
    'metagater_unaccelerated': 'MetaGater (alpha_t = 1)',
}
report.register_names(DISPLAY_NAMES)
# Methods that adapt another method's meta-model instead of training their own.
BACKBONE_OF = {'metasnip': 'metagater_nogate', 'metasnip_filters': 'metagater_nogate'}

_META = {'lam': 'meta.lam', 'local_lr': 'meta.local_lr', 'beta': 'meta.beta',
         'adapt_lr': 'adapt.lr'}
# Each trained method's hyperparameters and the shared field each defaults to.
SHARED = {
    'fedavg': {'local_lr': 'meta.local_lr', 'adapt_lr': 'adapt.lr'},
    'perfedavg_fo': {'alpha': 'perfedavg.alpha', 'beta': 'perfedavg.beta'},
    'perfedavg_hf': {'alpha': 'perfedavg.alpha_hf', 'beta': 'perfedavg.beta'},
    'metagater_nogate': dict(_META),
    'metagater': dict(_META, rho='meta.rho'),
    'metagater_unaccelerated': dict(_META, rho='meta.rho'),
}


def settings(name: str, config) -> dict:
  """``{name: value}`` of the hyperparameters method ``name`` runs with.

  ``per_method.<method>.<name>`` when it is set, else the shared field of
  ``SHARED``. The MetaSNIP variants read MetaGater w/o gating's ``adapt_lr``.
  With ``meta.regularizer='none'`` MetaGater's ``rho`` is 0.
  """
  if name in BACKBONE_OF:
    return {'adapt_lr': settings(BACKBONE_OF[name], config)['adapt_lr']}
  out = per_method.resolve(name, SHARED[name], config)
  if 'rho' in out and config.meta.regularizer == 'none':
    out['rho'] = 0.0
  return out


def reads(name: str, key: str) -> tuple:
  """The config fields that set hyperparameter ``key`` of method ``name``."""
  if name in BACKBONE_OF:
    return reads(BACKBONE_OF[name], key)
  return (f'per_method.{name}.{key}', SHARED[name][key])


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
  hp = settings(name, config)
  gated = name in ('metagater', 'metagater_unaccelerated')
  model = build_model(config, info, gating=gated)
  common = dict(local_steps=meta.local_steps, batch_size=meta.batch_size,
                tau=config.model.tau, scan_steps=scan_steps)
  lr = hp.pop('alpha') if name.startswith('perfedavg') else hp.pop('adapt_lr')
  one_step = functools.partial(_one_step, model, lr=lr, batch_size=a.batch_size)

  if name == 'fedavg':
    return Method(name, model, fedavg(model, **common), hp, one_step,
                  meta.local_steps, 1)
  if name in ('perfedavg_fo', 'perfedavg_hf'):
    hf = name == 'perfedavg_hf'
    return Method(name, model, perfedavg(model, hessian_free=hf, **common),
                  dict(alpha=lr, beta=hp['beta']), one_step, meta.local_steps,
                  3 if hf else 2)
  if name == 'metagater_nogate':
    return Method(name, model, metagater(model, regularizer='none', alpha=meta.alpha,
                                         eta=meta.eta, name=name, **common),
                  hp, one_step, meta.local_steps, 1)
  if name in BACKBONE_OF:
    gated_layers = build_model(config, info, gating=True).gated_layers
    prune = _snip if name == 'metasnip' else _snip_filters
    snip = functools.partial(prune, model, lr=lr, batch_size=a.batch_size,
                             layers=gated_layers)
    return Method(name, model, None, {}, snip, meta.local_steps, 1)
  plain = name == 'metagater_unaccelerated'
  alpha, eta = (1.0, 'beta') if plain else (meta.alpha, meta.eta)
  two_stage = functools.partial(_two_stage, model, lr=lr, keep_frac=a.keep_frac,
                                batch_size=a.batch_size, tau=config.model.tau,
                                gate_step=a.gate_step)
  return Method(name, model,
                metagater(model, regularizer=meta.regularizer, alpha=alpha, eta=eta,
                          name=name, **common),
                hp, two_stage, meta.local_steps, 1)


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


def _snip_filters(model, params, support, key, sparsity, **kwargs):
  params_j, keep = adapt.snip_filters(model, params, support, key, sparsity=sparsity,
                                      **kwargs)
  return params_j, {'kept_channels': keep}
