"""MetaGater networks with channel gating (docs/design.md s.1, 4, 6).

``build(name, ...)`` returns a ``Model`` with ``init(key)`` and
``apply(params, x, ...) -> (logits, gates)``; ``params = {'theta', 'phi'}``
(backbone, gating). Path-built masks target either part; ``kept_channels`` /
``subnet_mask`` / ``apply_mask`` give the stage-II subnetwork update; ``macs``
and ``param_count`` account for compute.

What is flax: the networks are ``flax.linen`` modules (``Network``, with the
backbone's ``nn.Conv`` / ``nn.Dense`` layers and the gate MLPs,
``mg.models.gating.Gate``) with flax initialisers; ``Model`` runs them as pure
functions over plain parameter pytrees, so masks, the prox and aggregation act
on those trees by path. What remains the project's own: the straight-through
Gumbel gate (the method itself), the patch convolution of few-channel inputs
and the floor max-pool (both measured faster on XLA:CPU; ``networks``), the
masks, subnetworks and compute accounting. The loss is optax's cross-entropy
averaged over a task's real rows (``mg.data.masked_mean``).
"""

from mg.models.compute import gate_macs
from mg.models.compute import layer_macs
from mg.models.compute import macs
from mg.models.compute import param_count
from mg.models.gating import Gate
from mg.models.gating import OUT_BIAS_INIT
from mg.models.masks import backbone_mask
from mg.models.masks import gate_output_mask
from mg.models.masks import gating_mask
from mg.models.networks import build
from mg.models.networks import DEFAULT_GATED_LAYERS
from mg.models.networks import LayerSpec
from mg.models.networks import Model
from mg.models.networks import NAMES
from mg.models.networks import Network
from mg.models.subnet import apply_mask
from mg.models.subnet import kept_channels
from mg.models.subnet import subnet_mask

__all__ = (
    'DEFAULT_GATED_LAYERS', 'Gate', 'LayerSpec', 'Model', 'NAMES', 'Network',
    'OUT_BIAS_INIT', 'apply_mask', 'backbone_mask', 'build', 'gate_macs',
    'gate_output_mask', 'gating_mask', 'kept_channels', 'layer_macs', 'macs',
    'param_count', 'subnet_mask',
)
