"""Each ReeFL-family method's own settings: ``per_method.<method>.<name>``, else shared.

The ReeFL methods (``mg.reefl.algorithms.reefl.METHODS``) and the paper's baselines
(``mg.reefl.algorithms.baselines.METHODS``) each read the settings of ``SHARED``:
the field ``per_method.<method>.<name>`` of a ReeFL config when it is set, else
the shared field it defaults to. So every method can run at its own tuned
settings (``configs/reefl/sweeps/*.py`` choose them on validation clients).
A method has only the fields that reach it: ``per_method.exclusivefl.kd_rounds``
does not exist (ExclusiveFL has no KD term), and the locked config refuses it.

Every setting here is a traced argument of the compiled local-training
programs (the round's learning rate, KD weight and ScaleFL's temperature), so
methods and sweep members that differ only in them share the programs.
"""

from __future__ import annotations

from mg import per_method
from mg import report

# The names the paper and the reports use (``mg.report.display_name``).
DISPLAY_NAMES = {
    'reefl': 'ReeFL', 'reefl_lastkd': 'ReeFL (last-exit KD)', 'reefl_nokd': 'ReeFL w/o KD',
    'reefl_nomod': 'ReeFL w/o modulation', 'reefl_maximum': 'ReeFL, all full budget',
    'exclusivefl': 'ExclusiveFL', 'inclusivefl': 'InclusiveFL',
    'inclusivefl_nomd': 'InclusiveFL w/o MD', 'depthfl': 'DepthFL',
    'depthfl_feddyn': 'DepthFL (FedDyn)', 'scalefl': 'ScaleFL'}
report.register_names(DISPLAY_NAMES)

_SCHEDULE = {'lr': 'fl.lr', 'min_lr': 'fl.min_lr'}     # the cosine schedule's ends
_RAMP = dict(_SCHEDULE, kd_rounds='fl.kd_rounds')       # + the KD ramp's length R_kd

# Each method's settings and the shared field each defaults to.
SHARED = {
    'reefl': _RAMP,
    'reefl_lastkd': _RAMP,
    'reefl_nokd': _SCHEDULE,
    'reefl_nomod': _RAMP,
    'reefl_maximum': _RAMP,
    'exclusivefl': _SCHEDULE,
    'inclusivefl': _SCHEDULE,
    'inclusivefl_nomd': _SCHEDULE,
    'depthfl': _RAMP,
    # The code's FedDyn run has its own schedule (depthFL_feddyn.yaml).
    'depthfl_feddyn': {'lr': 'baselines.feddyn_lr', 'min_lr': 'baselines.feddyn_min_lr',
                       'kd_rounds': 'fl.kd_rounds'},
    # A constant KD weight and temperature (scaleFL.yaml), no ramp.
    'scalefl': dict(_SCHEDULE, kd_weight='baselines.scalefl_kd_weight',
                    temperature='baselines.scalefl_temperature'),
}


def settings(method: str, config) -> dict:
  """``{name: value}`` of the settings ``method`` runs with under ``config``."""
  return per_method.resolve(method, SHARED[method], config)


def reads(method: str, key: str) -> tuple[str, str]:
  """The config fields that set setting ``key`` of ``method``: its own, then the shared."""
  return (f'per_method.{method}.{key}', SHARED[method][key])
