r"""DepthFL: depth-scaled clients with per-exit heads and mutual self-distillation.

Kim, Kim, Yi, Cho. "DepthFL: Depthwise Federated Learning for Heterogeneous
Clients", ICLR 2023; as re-implemented in the ReeFL code (royson/reefl,
``configs/reeFL/accumulator/depthFL_fedavg.yaml`` and ``depthFL_feddyn.yaml``,
``src/apps/clients/reefl_classification_client.py`` with ``kl_loss='all'``,
``src/server/strategies/earlyexit_feddyn.py`` and ``utils.py``).

**Client** of tier ``t`` (exits ``0..t``, one ``LayerNorm + Linear`` head
each): summed cross-entropy plus
:math:`w(r)\,\frac{1}{t}\sum_i \sum_{j \ne i} \mathrm{KL}(\mathrm{sg}(p_j) \,\|\, p_i)`
(:func:`mg.reefl.algorithms.early_exit.kd_all`), ``w(r)`` ReeFL's ramp.

**Server**: ``depthfl`` the example-weighted mean per parameter
(``EarlyExitFedAvg``); ``depthfl_feddyn`` FedDyn (Acar et al., ICLR 2021)
per parameter over the ``n_k`` sampled clients that hold it
(:func:`feddyn_aggregate`):

.. math::

  \bar\theta_k = \frac{1}{n_k}\sum_i \theta_{i,k}, \quad
  h_k \leftarrow h_k - \alpha \frac{n_k}{N} (\bar\theta_k - \theta_k), \quad
  \theta_k \leftarrow \bar\theta_k - h_k / \alpha

(``N`` all clients, alpha 0.1; unweighted, as the code). Each client keeps
its state ``g_i`` by client id (the code's ``prev_grads/{cid}`` file; here
``opt_state['g']``, one row per client) and trains on
:math:`L - \langle\theta, g_i\rangle + \frac{\alpha}{2}\|\theta - \theta^t\|^2`,
then sets :math:`g_i \leftarrow g_i - \alpha(\theta_i - \theta^t)`. The code's
FedDyn run uses its own schedule: SGD 0.1 -> 0.01 cosine, weight decay 1e-3.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mg.reefl.algorithms import early_exit, exclusivefl
from mg.models import vit
from mg.models.vit import flatten, unflatten


def spec(cfg: vit.ViTConfig, regime: str) -> early_exit.Spec:
  """DepthFL with FedAvg: ExclusiveFL's model and server, every tier trains."""
  return exclusivefl.spec(cfg, regime)


def feddyn_aggregate(global_flat: dict, h: dict, uploads: list[dict], num_clients: int,
                     alpha: float) -> tuple[dict, dict]:
  """FedDyn's server step per parameter (``aggregate_inplace_early_exit_feddyn``), float64.

  Args:
    global_flat: ``{path: array}`` the current trainable parameters.
    h: ``{path: array}`` the server's FedDyn state.
    uploads: the sampled clients' trainable parameters (each a subset of paths).
    num_clients: all clients ``N``; alpha: FedDyn's alpha.

  Returns:
    (new parameters, new h); a parameter no upload holds keeps its value and its h.
  """
  new, new_h = {}, {}
  for k, v in global_flat.items():
    held = [np.asarray(u[k], np.float64) for u in uploads if k in u]
    if not held:
      new[k], new_h[k] = v, h[k]
      continue
    mean = sum(held) / len(held)
    hk = np.asarray(h[k], np.float64) - alpha * len(held) * (mean - np.asarray(v, np.float64)) / num_clients
    new[k] = np.asarray(mean - hk / alpha, np.float32)
    new_h[k] = np.asarray(hk, np.float32)
  return new, new_h


def feddyn_extra(params, regime: str, num_clients: int) -> dict:
  """FedDyn's state: ``h`` per trainable parameter, and ``g`` with one row per client."""
  train = early_exit.split(flatten(params), regime)[0]
  return {'h': {k: jnp.zeros_like(v) for k, v in train.items()},
          'g': {k: jnp.zeros((num_clients,) + v.shape, v.dtype) for k, v in train.items()}}


def feddyn_spec(cfg: vit.ViTConfig, regime: str, num_clients: int, alpha: float) -> early_exit.Spec:
  """DepthFL with FedDyn: the server step above, client states by id."""

  def server(state, uploads, outputs):
    flat = flatten(state.params)
    train = early_exit.split(flat, regime)[0]
    new, h = feddyn_aggregate(train, state.opt_state['h'], [u for u, _ in uploads],
                              num_clients, alpha)
    g = dict(state.opt_state['g'])
    for k in g:
      rows = [(o.metrics['cid'], o.metrics['state'][k]) for o in outputs if k in o.metrics['state']]
      if rows:
        ids = jnp.asarray([c for c, _ in rows])
        g[k] = g[k].at[ids].set(jnp.stack([r for _, r in rows]))
    h = {k: jnp.asarray(v) for k, v in h.items()}
    return unflatten({**flat, **new}), {'h': h, 'g': g}

  return exclusivefl.spec(cfg, regime)._replace(server=server, client_state=True)
