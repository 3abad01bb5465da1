"""Shared fixtures: the tiny config and its data (built once per session)."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


@pytest.fixture(scope='session')
def test_config():
  from configs import test as test_config_file
  return test_config_file.get_config()


@pytest.fixture(scope='session')
def reefl_programs():
  """Compiled ReeFL / baseline programs of ``configs/reefl_test.py``, shared by its tests."""
  return {}


@pytest.fixture(scope='session')
def test_data(test_config):
  """``(FederatedData on device, Partition, info)`` of ``configs/test.py``."""
  import jax
  from mg import data
  fed, partition, info = data.build(test_config.data, test_config.seed)
  return jax.device_put(fed), partition, info
