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
(:func:`mg.federated.aggregation.feddyn`):

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

import functools

from flax import traverse_util
import jax.numpy as jnp

from mg.federated import aggregation
from mg.reefl.algorithms import early_exit, exclusivefl
from mg.models import vit


@functools.cache  # equal arguments, the same Spec: its programs are shared
def spec(cfg: vit.ViTConfig, regime: str) -> early_exit.Spec:
  """DepthFL with FedAvg: ExclusiveFL's model and server, every tier trains."""
  return exclusivefl.spec(cfg, regime)


def feddyn_extra(params, regime: str, num_clients: int) -> dict:
  """FedDyn's state: ``h`` per trainable parameter, and ``g`` with one row per client.

  By path with the blocks stacked: ``g['blocks/q/kernel']`` is (N, D, ...).
  """
  train = early_exit.split(traverse_util.flatten_dict(params, sep='/'), regime)[0]
  return {'h': {k: jnp.zeros_like(v) for k, v in train.items()},
          'g': {k: jnp.zeros((num_clients,) + v.shape, v.dtype) for k, v in train.items()}}


def feddyn_server(num_clients: int, alpha: float):
  """FedDyn's server rule (:func:`mg.federated.aggregation.feddyn`) and the clients' states.

  Each sampled client's row of ``g`` takes its new state where its tier holds
  the entry (the code's ``prev_grads/{cid}``); other rows are untouched.
  """

  def server(train, extra, batch: early_exit.Uploads):
    new, h = aggregation.feddyn(train, extra['h'], batch.trees, batch.held, num_clients, alpha)
    g = {}
    for k, gk in extra['g'].items():
      rows = gk[batch.cids]
      held = aggregation.expand(batch.held[k], rows.ndim)
      g[k] = gk.at[batch.cids].set(jnp.where(held, batch.states[k], rows))
    return new, {'h': h, 'g': g}

  return server


@functools.cache  # equal arguments, the same Spec: its programs are shared
def feddyn_spec(cfg: vit.ViTConfig, regime: str, num_clients: int, alpha: float) -> early_exit.Spec:
  """DepthFL with FedDyn: the server step above, client states by id."""
  return exclusivefl.spec(cfg, regime)._replace(server=feddyn_server(num_clients, alpha),
                                                client_state=True)
