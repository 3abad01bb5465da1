"""Helpers shared by the tests: small data configs, config overrides, simulated devices."""

import json
import os
import subprocess
import sys

import ml_collections

# The repository root: where the commands of the tests run.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def data_config(**overrides) -> ml_collections.ConfigDict:
  """A small valid ``config.data`` (digits, 6 tasks) with ``overrides``."""
  fields = dict(source='auto', name='digits', dir=None, split='all',
                num_tasks=6, num_targets=2, num_validation=None, classes_per_task=2,
                min_samples=20, max_samples=40, query_fraction=0.5)
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


def config_with(test_config, **overrides):
  """A type-unsafe copy of configs/test.py with ``'a.b': value`` overrides."""
  config = ml_collections.ConfigDict(test_config.to_dict(), type_safe=False)
  for field, value in overrides.items():
    *parents, last = field.split('.')
    node = config
    for part in parents:
      node = node[part]
    node[last] = value
  return config


def compared(value, left_out):
  """``value`` (JSON) without the keys in ``left_out`` at any depth (timings, resumes)."""
  if isinstance(value, dict):
    return {k: compared(v, left_out) for k, v in value.items() if k not in left_out}
  if isinstance(value, list):
    return [compared(v, left_out) for v in value]
  return value


def checkpoint_steps(workdir) -> list:
  """The completed checkpoint steps in ``workdir/checkpoints``, oldest first."""
  folder = os.path.join(workdir, 'checkpoints')
  return sorted(int(p) for p in os.listdir(folder) if p.isdigit()) if os.path.isdir(folder) else []


def session_restored(config, workdir, kind='run', accept=False):
  """Holds ``workdir`` as the harness does for ``config`` (accepting the work, without
  training, if ``accept``) and lets go; returns what a run would resume from (raises
  what the harness refuses with)."""
  from mg.harness import session  # pylint: disable=import-outside-toplevel
  from mg.metagater import run  # pylint: disable=import-outside-toplevel
  with session.Session(config, str(workdir), kind=kind, outputs=run.OUTPUTS) as s:
    if accept:
      s.accept()
    return s.restored


def session_accepted(config, workdir, kind='run'):
  """Holds ``workdir`` for ``config`` and accepts the work (no training)."""
  session_restored(config, workdir, kind, accept=True)


def on_host_devices(script: str, count: int, timeout: int = 300) -> dict:
  """Runs ``script`` in a fresh interpreter with ``count`` forced host devices.

  The flag must be set before JAX starts (this test session has one device).
  Returns the JSON object the script prints on its last line.
  """
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={count}',
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])
