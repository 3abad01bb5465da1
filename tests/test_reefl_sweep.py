"""ReeFL's per-method settings and its sweep: fields, equal effort, choice on validation."""

import pytest

from configs import reefl_common, reefl_test
from mg import reefl_methods, reefl_run
from mg.algorithms import baselines, reefl


def test_per_method_fields_are_the_settings_each_method_reads():
  assert set(reefl_common.PER_METHOD) == set(reefl.METHODS) | set(baselines.METHODS)
  for method, fields in reefl_common.PER_METHOD.items():
    assert set(fields) == set(reefl_methods.SHARED[method]), method


def test_per_method_settings_fall_back_to_the_shared_fields():
  config = reefl_test.get_config()
  assert reefl_methods.settings('reefl', config) == {
      'lr': config.fl.lr, 'min_lr': config.fl.min_lr, 'kd_rounds': config.fl.kd_rounds}
  assert reefl_methods.settings('depthfl_feddyn', config)['lr'] == config.baselines.feddyn_lr
  config.per_method.scalefl.lr = 0.2
  config.per_method.scalefl.kd_weight = 0.5
  assert reefl_methods.settings('scalefl', config)['lr'] == 0.2
  assert reefl_methods.settings('depthfl', config)['lr'] == config.fl.lr
  # ... and reach the algorithms: ScaleFL's options, each method's schedule.
  assert reefl_run.baseline_options(config, 'scalefl').scalefl_kd_weight == 0.5
  assert reefl_run.schedule(config, 'scalefl')[0] == 0.2
  config.per_method.depthfl_feddyn.lr = 0.3
  assert reefl_run.baseline_options(config, 'depthfl_feddyn').feddyn_lr == 0.3


def test_per_method_field_a_method_does_not_read_is_an_error():
  config = reefl_test.get_config()
  config.lock()
  with pytest.raises(AttributeError):
    config.per_method.exclusivefl.kd_rounds = 10.0   # ExclusiveFL has no KD term
  with pytest.raises(AttributeError):
    config.per_method.reefl.learning_rate = 0.1      # misspelt
  config.per_method.reefl.lr = -1.0
  with pytest.raises(reefl_run.ConfigError, match='per_method.reefl.lr or fl.lr=-1.0'):
    reefl_run.validate(config)
