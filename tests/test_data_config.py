"""Checks of the config.data fields (mg.data.validate)."""

import pytest

import mg.data
from data_helpers import data_config


@pytest.mark.parametrize('overrides, message', [
    (dict(nam='mnist'), "no field 'nam' \\(did you mean 'name'\\?\\)"),
    (dict(name='mnst'), "name='mnst' is not valid \\(did you mean 'mnist'"),
    (dict(source='tdfs'), "source='tdfs' is not valid.*'tfds'"),
    (dict(split='validation'), "split='validation' is not valid"),
    (dict(name='mnist', source='digits'), "serves only name='digits'"),
    (dict(source='raw'), 'cannot serve name=.digits.'),
    (dict(split='train'), 'digits have no train/test split'),
    (dict(name='mnist', source='raw'), 'needs config.data.dir'),
    (dict(num_targets=6), 'num_targets=6 must be smaller'),
    (dict(classes_per_task=11), 'exceeds the 10 classes'),
    (dict(min_samples=50), 'min_samples=50 exceeds'),
    (dict(query_fraction=0), 'strictly between 0 and 1'),
    (dict(num_tasks=2.5), 'num_tasks=2.5 must be a positive integer'),
])
def test_validate_names_the_field(overrides, message):
  with pytest.raises(mg.data.DataError, match=message) as err:
    mg.data.validate(data_config(**overrides))
  assert '\n' not in str(err.value)


def test_validate_missing_field_and_good_config():
  cfg = data_config().to_dict()
  mg.data.validate(cfg)
  del cfg['query_fraction']
  with pytest.raises(mg.data.DataError,
                     match="lacks the field 'query_fraction'"):
    mg.data.validate(cfg)
