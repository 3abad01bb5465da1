"""Pure-function MetaGater networks with channel gating (docs/design.md s.1, 4, 6).

``build(name, ...)`` returns a ``Model`` with ``init(key)`` and
``apply(params, x, ...) -> (logits, gates)``; ``params = {'theta', 'phi'}``
(backbone, gating). Path-built masks target either part; ``kept_channels`` /
``subnet_mask`` / ``apply_mask`` give the stage-II subnetwork update; ``macs``
and ``param_count`` account for compute.
"""

from mg.models.compute import gate_macs
from mg.models.compute import layer_macs
from mg.models.compute import macs
from mg.models.compute import param_count
from mg.models.gating import OUT_BIAS_INIT
from mg.models.losses import accuracy
from mg.models.losses import cross_entropy
from mg.models.masks import backbone_mask
from mg.models.masks import gate_output_mask
from mg.models.masks import gating_mask
from mg.models.networks import build
from mg.models.networks import DEFAULT_GATED_LAYERS
from mg.models.networks import LayerSpec
from mg.models.networks import Model
from mg.models.networks import NAMES
from mg.models.subnet import apply_mask
from mg.models.subnet import kept_channels
from mg.models.subnet import subnet_mask

__all__ = (
    'DEFAULT_GATED_LAYERS', 'LayerSpec', 'Model', 'NAMES', 'OUT_BIAS_INIT',
    'accuracy', 'apply_mask', 'backbone_mask', 'build', 'cross_entropy',
    'gate_macs', 'gate_output_mask', 'gating_mask', 'kept_channels',
    'layer_macs', 'macs', 'param_count', 'subnet_mask',
)
