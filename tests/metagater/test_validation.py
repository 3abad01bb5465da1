"""Every config value is checked before any work starts; each message names its field."""

import json

import numpy as np
import pytest

from mg.metagater import config as config_lib
from mg import data as data_lib
from data_helpers import config_with as _config, session_accepted, session_restored




@pytest.mark.parametrize('field, value, message', [
    # Positive counts.
    ('repeats', 0, 'repeats=0: expected an integer >= 1'),
    ('meta.rounds', 0, 'meta.rounds=0: expected an integer >= 1'),
    ('meta.rounds', 2.5, 'meta.rounds=2.5: expected an integer >= 1'),
    ('meta.rounds', True, 'meta.rounds=True: expected an integer >= 1'),
    ('eval_every', -1, 'eval_every=-1: expected an integer >= 1'),
    ('meta.tasks_per_round', 0, 'meta.tasks_per_round=0: expected an integer >= 1'),
    ('model.gate_hidden', 0, 'model.gate_hidden=0: expected an integer >= 1'),
    ('checkpoint_every', 0, 'checkpoint_every=0: expected an integer >= 1'),
    ('keep_checkpoints', 0, 'keep_checkpoints=0: expected an integer >= 1'),
    ('seed', -1, 'seed=-1: expected an integer >= 0'),
    ('meta.local_steps', -1, 'meta.local_steps=-1: expected an integer >= 1'),
    ('meta.local_steps', 0, 'meta.local_steps=0: every method trains with K local steps'),
    ('meta.batch_size', -8, 'meta.batch_size=-8: expected an integer >= 0'),
    ('debug_nan_round', -1, 'debug_nan_round=-1: expected an integer >= 0'),
    ('meta.local_lr', 0.0, 'meta.local_lr=0.0: expected a number > 0'),
    ('adapt.lr', -0.1, 'adapt.lr=-0.1: expected a number > 0'),
    ('perfedavg.alpha_hf', 0.0, 'perfedavg.alpha_hf=0.0: expected a number > 0'),
    ('meta.rho', -0.01, 'meta.rho=-0.01: expected a number >= 0'),
    # Probabilities and fractions in range.
    ('meta.alpha', 1.5, 'meta.alpha=1.5: expected a number in (0, 1]'),
    ('meta.alpha', 0.0, 'meta.alpha=0.0: expected a number in (0, 1]'),
    ('adapt.keep_frac', 1.0, 'adapt.keep_frac=1.0: expected a fraction in [0, 1)'),
    # Switches and names.
    ('resume', 'yes', "resume='yes': expected True or False"),
    ('progress', 1, 'progress=1: expected True or False'),
    ('adapt.gate_step', 'no', "adapt.gate_step='no': expected True or False"),
    ('debug_nan_method', 'fedsgd', "debug_nan_method='fedsgd': expected one of the methods"),
    ('model.gated_layers', ('conv9',), "model.gated_layers=('conv9',)"),
    ('meta.regularizer', 'l3', "meta.regularizer='l3'"),
    # Tasks per round vs meta-training tasks (configs/test.py: 8 - 2 targets - 2 validation).
    ('meta.tasks_per_round', 7, 'meta.tasks_per_round=7 is more than the 4 meta-training'),
])
def test_config_errors_name_the_field(test_config, field, value, message):
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.validate(_config(test_config, **{field: value}))
  assert message in str(error.value)


@pytest.mark.parametrize('field, value, message', [
    ('data.num_tasks', 0, 'config.data.num_tasks=0 must be a positive integer'),
    ('data.query_fraction', 1.0, 'config.data.query_fraction=1.0 must be a number strictly'),
    ('data.query_fraction', 0.0, 'config.data.query_fraction=0.0 must be a number strictly'),
    ('data.classes_per_task', 11, 'config.data.classes_per_task=11 exceeds the 10 classes'),
    ('data.num_targets', 8, 'config.data.num_targets=8 must be smaller than'),
    ('data.min_samples', 50, 'config.data.min_samples=50 exceeds config.data.max_samples=40'),
])
def test_data_errors_name_the_field(test_config, field, value, message):
  with pytest.raises(data_lib.DataError) as error:
    config_lib.validate(_config(test_config, **{field: value}))
  assert message in str(error.value)


def _labels(counts):
  return np.repeat(np.arange(len(counts)), counts)


def test_classes_per_task_against_the_loaded_dataset(test_config):
  config = _config(test_config, **{'data.classes_per_task': 4})
  with pytest.raises(config_lib.ConfigError, match=r'data.classes_per_task=4 is more than '
                     r'the 3 classes of dataset tiny'):
    config_lib.validate_dataset(config, _labels([100, 100, 100]), 3, 'tiny')


def test_a_sample_range_the_dataset_cannot_hold(test_config):
  # 8 tasks x at least 20 samples = 160 > 150 images.
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.validate_dataset(test_config, _labels([15] * 10), 10, 'tiny')
  assert ('data.num_tasks=8 x data.min_samples=20 = 160 samples are more than the 150 '
          'images of dataset tiny (10 classes)') in str(error.value)


def test_a_class_too_small_for_its_share(test_config):
  # 8 tasks x 2 classes over 4 classes: each class serves >= 4 tasks asking >= 10.
  labels = _labels([100, 100, 100, 39])
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.validate_dataset(test_config, labels, 4, 'tiny')
  assert ('data.min_samples=20: every class serves at least 4 of the data.num_tasks=8 '
          'tasks, each asking at least 10 of its samples, but class 3 has only 39') in str(
              error.value)
  config_lib.validate_dataset(test_config, _labels([100, 100, 100, 40]), 4, 'tiny')


def test_the_real_test_config_passes(test_config):
  config_lib.validate(test_config)
  labels = data_lib.load(test_config.data).labels
  config_lib.validate_dataset(test_config, labels, 10, 'digits')


def test_a_workdir_of_another_config_is_refused_unless_resume_is_off(test_config, tmp_path):
  session_accepted(test_config, tmp_path)
  (tmp_path / 'checkpoints' / '3').mkdir(parents=True)  # unreadable: config.json is the record
  (tmp_path / 'results.json').write_text('{}')
  # Fields that do not change the results may differ.
  session_restored(_config(test_config, checkpoint_every=5, progress=True), tmp_path)
  other = _config(test_config, **{'meta.rounds': 9, 'methods': ('fedavg',)})
  with pytest.raises(config_lib.ConfigError) as error:
    session_restored(other, tmp_path)
  message = str(error.value)
  assert 'meta.rounds: 2 -> 9' in message and 'methods:' in message
  assert '--config.resume=False' in message and 'fresh --workdir' in message
  assert (tmp_path / 'checkpoints' / '3').exists()
  with pytest.raises(config_lib.ConfigError, match='it holds a run, not a sweep'):
    session_restored(test_config, tmp_path, kind='sweep')
  other.resume = False
  assert session_restored(other, tmp_path) is None
  # Nothing changes until the run is accepted (its data loaded).
  assert (tmp_path / 'checkpoints' / '3').exists()
  assert json.loads((tmp_path / 'config.json').read_text())['meta']['rounds'] == 2
  session_accepted(other, tmp_path)
  assert not (tmp_path / 'checkpoints' / '3').exists()
  assert not (tmp_path / 'results.json').exists()
  assert json.loads((tmp_path / 'config.json').read_text())['meta']['rounds'] == 9


def test_the_checkpoint_holds_the_config_of_record(test_config, tmp_path):
  """Issue 15, 2: a refused command changes nothing, whatever config.json says."""
  from mg.harness import checkpoint  # pylint: disable=import-outside-toplevel
  from mg.harness import record  # pylint: disable=import-outside-toplevel
  store = checkpoint.Store(str(tmp_path / 'checkpoints'), keep=2)
  store.save({'rng': np.zeros(2, np.uint32)}, {'config': record.of(test_config, 'run')})
  store.close()
  other = _config(test_config, **{'meta.rho': 0.5})
  edited = record.text(record.of(other, 'run'))
  for config_json in (None, edited):  # missing, or edited
    if config_json is not None:
      (tmp_path / 'config.json').write_text(config_json)
    with pytest.raises(config_lib.ConfigError, match='meta.rho: 0.01 -> 0.5'):
      session_restored(other, tmp_path)
    assert session_restored(test_config, tmp_path).step == 1
  assert (tmp_path / 'config.json').read_text() == edited
  (tmp_path / 'config.json').write_text('{"meta": ')  # unreadable, but the checkpoint rules
  assert session_restored(test_config, tmp_path).step == 1


@pytest.mark.parametrize('field, message', [
    # A meta-training node trains on all its local data (support and query).
    ('meta.batch_size', 'meta.batch_size=100000 is more than the 40 local examples of '
     'the largest meta-training task; use at most 40'),
    ('adapt.batch_size', 'adapt.batch_size=100000 is more than the 23 local examples of '
     'the largest target task; use at most 23'),
])
def test_a_batch_larger_than_every_task_is_refused_with_the_numbers(test_config, test_data,
                                                                   field, message):
  fed = test_data[0]
  largest = int(message.split('use at most ')[1])
  config_lib.validate_tasks(_config(test_config, **{field: largest}), fed)  # the bound
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.validate_tasks(_config(test_config, **{field: 100000}), fed)
  assert message in str(error.value)
