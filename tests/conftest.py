"""Shared fixtures: the tiny config and its data (built once per session).

One persistent compilation cache serves the whole session, in this process and
in every subprocess a test starts (they inherit the environment): many tests
make the same programs of ``configs/test.py`` and ``configs/reefl/test.py``,
and only the first compiles them. It lives in a fresh temporary folder, removed
at exit, so tests neither read nor write a user's cache; a
``JAX_COMPILATION_CACHE_DIR`` already set wins. It is set before JAX is
imported: JAX reads these settings from the environment then, and a cache set
after the first compilation is not used.
"""

import atexit
import os
import shutil
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix='mg-tests-xla-')
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ.update(JAX_COMPILATION_CACHE_DIR=_CACHE,
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')


@pytest.fixture(scope='session')
def test_config():
  from configs import test as test_config_file
  return test_config_file.get_config()


@pytest.fixture(scope='session')
def reefl_programs():
  """Compiled ReeFL / baseline programs of ``configs/reefl/test.py``, shared by its tests."""
  return {}


@pytest.fixture(scope='session')
def test_data(test_config):
  """``(FederatedData on device, Partition, info)`` of ``configs/test.py``."""
  import jax
  from mg import data
  fed, partition, info = data.build(test_config.data, test_config.seed)
  return jax.device_put(fed), partition, info
