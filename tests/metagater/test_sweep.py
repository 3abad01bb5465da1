"""Batched sweeps: a member equals its single run, divergence stays per member,
sharding the members changes nothing, and bad sweep files fail in one line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mg.metagater import system as metagater
from mg.metagater.sweep import family
from mg.metagater.sweep import runner
from mg.metagater.sweep import program
from mg.sweep import spec
from data_helpers import ROOT

# Seed 1 twice (one member diverges in training next to a healthy one), seed 0
# twice (one member's fast adaptation turns non-finite): two seed groups.
MEMBERS = {'method': 'metagater', 'members': [
    {'meta.beta': 0.5, 'adapt.lr': 0.1, 'seed': 1},
    {'meta.local_lr': 1e30, 'seed': 1},
    {'meta.rho': 0.1, 'seed': 0},
    {'adapt.lr': 3e38, 'seed': 0},
]}
SHARDED = r"""
import json, sys
import jax
from configs import test
from mg.metagater import system as metagater
from mg.metagater.sweep import runner
config = test.get_config()
assert jax.device_count() == 4, jax.devices()
out = runner.run_sweep(config, metagater.members(json.loads(sys.argv[1]), config), sys.argv[2],
                      member_mapping='vmap')
print('ROWS=' + json.dumps(out['rows']))
"""


def _env(**extra):
  return dict(os.environ, JAX_PLATFORMS='cpu', **extra)


@pytest.fixture(scope='module')
def sharded_proc(tmp_path_factory):
  """The same sweep vmapped, its members sharded over 4 (host) devices, started early.

  The unsharded sweep of ``swept`` maps its members by ``loop`` (the XLA:CPU
  default for a CNN), so the comparison also checks that both member mappings
  give the same rows.
  """
  workdir = tmp_path_factory.mktemp('sharded')
  env = _env(XLA_FLAGS='--xla_force_host_platform_device_count=4')
  proc = subprocess.Popen([sys.executable, '-c', SHARDED, json.dumps(MEMBERS), str(workdir)],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  yield proc
  if proc.poll() is None:
    proc.kill()


@pytest.fixture(scope='module')
def swept(test_config, tmp_path_factory, sharded_proc):
  del sharded_proc  # started first, so that it runs alongside
  workdir = tmp_path_factory.mktemp('sweep')
  out = runner.run_sweep(test_config, metagater.members(MEMBERS, test_config), str(workdir))
  return out, workdir


def test_member_equals_single_run(swept, test_config, tmp_path):
  from mg.metagater import run as run_lib
  out, _ = swept
  single = test_config.copy_and_resolve_references()
  single.seed, single.meta.beta, single.adapt.lr = 1, 0.5, 0.1
  single.methods = ('metagater',)
  expected = run_lib.run(single, str(tmp_path / 'single'))['rows'][0]
  member = out['rows'][0]
  assert member['seed'] == 1 and member['hparams']['meta.beta'] == 0.5
  assert member['hparams']['adapt.lr'] == pytest.approx(0.1)
  np.testing.assert_allclose(member['target_accuracy'], expected['target_accuracy'],
                             atol=1e-6)
  np.testing.assert_allclose(member['target_sparsity'], expected['target_sparsity'],
                             atol=1e-5)
  assert member['accuracy'] == pytest.approx(expected['accuracy_mean'], abs=1e-6)
  assert member['sparsity'] == pytest.approx(expected['sparsity_mean'], abs=1e-5)
  assert not member['diverged']


def test_a_finished_sweep_resumes_without_training(swept, test_config, capsys):
  """The run harness holds a sweep's workdir as a run's: resume, config of record."""
  from data_helpers import config_with  # pylint: disable=import-outside-toplevel
  from mg.errors import ConfigError  # pylint: disable=import-outside-toplevel
  out, workdir = swept
  capsys.readouterr()
  again = runner.run_sweep(test_config, metagater.members(MEMBERS, test_config), str(workdir))
  printed = capsys.readouterr().out
  assert 'resuming from checkpoint' in printed and 'members in' not in printed
  assert again['rows'] == out['rows']
  other = config_with(test_config, **{'meta.rounds': 3})
  with pytest.raises(ConfigError, match='meta.rounds: 2 -> 3'):
    runner.run_sweep(other, metagater.members(MEMBERS, other), str(workdir))


def test_diverged_member_is_reported_and_isolated(swept):
  out, workdir = swept
  healthy, nan, other, blown = out['rows']
  # Its meta-model goes non-finite in training by round 2; fast adaptation from
  # its round-1 meta-model may already fail: the first divergence counts.
  assert nan['diverged'] and nan['diverged_round'] in (1, 2)
  assert nan['diverged_stage'] in ('training', 'adaptation', 'evaluation')
  assert nan['diverged_stage'] == 'training' or nan['diverged_round'] == 1
  # Issue 15, 3: non-finite adaptation is a divergence, not an accuracy.
  assert blown['diverged'] and blown['diverged_round'] == 1
  assert blown['diverged_stage'] in ('adaptation', 'evaluation')
  assert blown['accuracy'] is None and blown['curve']['round'] == []
  assert all(np.isfinite(blown['losses']))
  assert nan['accuracy'] is None and nan['target_accuracy'] == []
  assert None in nan['losses'][:2]
  for row in (healthy, other):
    assert not row['diverged'] and 0.0 <= row['accuracy'] <= 1.0
    assert all(np.isfinite(row['losses']))
    assert row['curve']['round'] == [1, 2]
  on_disk = json.loads((workdir / 'sweep.json').read_text())
  assert [r['diverged'] for r in on_disk['rows']] == [False, True, False, True]
  assert on_disk['best']['metagater']['hparams']['per_method.metagater.local_lr'] == 0.05
  for row in (healthy, other):
    assert 0.0 <= row['validation_accuracy_mean'] <= 1.0
    assert len(row['validation_accuracy']) == 2  # configs/test.py: 2 validation tasks
  assert nan['validation_accuracy_mean'] is None
  best = on_disk['best']['metagater']
  chosen = max((healthy, other), key=lambda r: r['validation_accuracy_mean'])
  assert best['validation_accuracy_mean'] == pytest.approx(chosen['validation_accuracy_mean'])
  assert best['accuracy_mean'] == pytest.approx(chosen['accuracy'])
  assert (f"diverged (round {nan['diverged_round']}, {nan['diverged_stage']})"
          in (workdir / 'sweep.md').read_text())
  assert json.loads((workdir / 'config.json').read_text())['meta']['rounds'] == 2
  assert set(on_disk['fields']) == {'meta.beta', 'meta.local_lr', 'meta.rho', 'adapt.lr',
                                    'seed'}
  for field in ('meta_beta', 'meta_local_lr', 'meta_rho', 'adapt_lr'):
    assert (workdir / f'sweep_{field}.png').stat().st_size > 0


def test_sharded_sweep_equals_unsharded(swept, sharded_proc):
  out, _ = swept
  stdout, stderr = sharded_proc.communicate(timeout=600)
  assert sharded_proc.returncode == 0, stderr[-3000:]
  assert "4 device(s)" in stdout
  rows = json.loads(next(l for l in stdout.splitlines() if l.startswith('ROWS='))[5:])
  assert len(rows) == len(out['rows'])
  for got, want in zip(rows, out['rows']):
    assert got['diverged'] == want['diverged']
    assert got['diverged_round'] == want['diverged_round']
    if not want['diverged']:
      np.testing.assert_allclose(got['target_accuracy'], want['target_accuracy'], atol=1e-6)
      np.testing.assert_allclose(got['target_sparsity'], want['target_sparsity'], atol=1e-5)
      np.testing.assert_allclose(got['losses'], want['losses'], rtol=1e-5)


def test_member_mapping_default_and_refusal():
  assert program.resolve_member_mapping('auto', 'cpu', 'cnn4') == 'loop'
  assert program.resolve_member_mapping('auto', 'cpu', 'mlp') == 'vmap'
  assert program.resolve_member_mapping('auto', 'gpu', 'cnn4') == 'vmap'
  assert program.resolve_member_mapping('vmap', 'cpu', 'cnn4') == 'vmap'
  with pytest.raises(ValueError, match="'grouped' is not one of"):
    program.resolve_member_mapping('grouped', 'cpu', 'cnn4')


def test_layout_groups_by_seed_and_pads_to_devices():
  lay = program.layout([3, 3, 0, 3], num_devices=2)
  assert lay.seeds == (3, 0)
  np.testing.assert_array_equal(lay.slots, [[0, 1, 3, 3], [2, 2, 2, 2]])
  assert lay.first_slot == {0: (0, 0), 1: (0, 1), 3: (0, 2), 2: (1, 0)}


def test_grid_expands_fields_then_seeds(test_config):
  members = metagater.members([
      {'method': 'metagater', 'grid': {'meta.beta': [0.5, 1], 'meta.rho': [0.0, 0.1]},
       'seeds': [4, 5]},
      {'method': ['fedavg', 'metagater_nogate'], 'grid': {'adapt.lr': [0.2], 'seed': [7]}},
  ], test_config)
  assert len(members) == 10
  assert members[0] == spec.Member('metagater', {'meta.beta': 0.5, 'meta.rho': 0.0}, 4)
  assert members[1].seed == 5 and members[2].values == {'meta.beta': 0.5, 'meta.rho': 0.1}
  assert [m.method for m in members[8:]] == ['fedavg', 'metagater_nogate']
  assert all(m.seed == 7 for m in members[8:])
  config = spec.member_config(test_config, members[3])
  assert (config.seed, config.meta.beta, config.meta.rho) == (5, 0.5, 0.1)
  assert spec.swept_fields(members, test_config) == ('meta.beta', 'meta.rho', 'adapt.lr',
                                                     'seed')


@pytest.mark.parametrize('sweep_spec, message', [
    ({'method': 'metagater', 'grid': {'meta.betta': [1.0]}},
     "unknown field 'meta.betta' for metagater; fields that can vary: per_method.metagater.lam"),
    ({'method': 'fedavg', 'grid': {'meta.rho': [0.1]}},
     "field 'meta.rho' cannot vary in a sweep of fedavg"),
    ({'method': 'metagater', 'grid': {'meta.rounds': [3]}},
     "--config.meta.rounds=..."),
    ({'method': 'metagater', 'grid': {'meta.beta': ['big']}},
     "meta.beta: value 'big' is not a number"),
    ({'method': 'metagater', 'grid': {'meta.beta': [True]}}, 'is not a number'),
    ({'method': 'metagater', 'grid': {'meta.beta': [float('nan')]}}, 'is not finite'),
    ({'method': 'metagater', 'grid': {}}, 'the grid is empty'),
    ({'method': 'metagater', 'grid': {'meta.beta': []}}, "grid field 'meta.beta' has no values"),
    ({'method': 'metagater', 'members': []}, "'members' must be a non-empty list"),
    ({'method': 'metagater'}, "exactly one of 'grid'"),
    ({'method': 'metasnip', 'grid': {'adapt.lr': [0.1]}}, 'sweep metagater_nogate instead'),
    ({'method': 'fedavgg', 'grid': {'adapt.lr': [0.1]}}, "unknown method 'fedavgg'"),
    ({'method': 'fedavg', 'grid': {'adapt.lr': [0.1]}, 'seeds': [-1]}, 'is not a seed'),
    ({'method': 'fedavg', 'grid': {'adapt.lr': [0.1]}, 'sed': [1]}, "unknown key 'sed'"),
    ({'method': 'fedavg', 'grid': {'meta.local_lr': [-0.1]}},
     'member fedavg(meta.local_lr=-0.1, seed=0): meta.local_lr=-0.1: expected a number > 0'),
    ([], 'non-empty list'),
])
def test_bad_sweep_raises_one_clear_error(test_config, sweep_spec, message):
  with pytest.raises(spec.SweepError) as info:
    metagater.members(sweep_spec, test_config)
  assert message in str(info.value)
  assert '\n' not in str(info.value)


@pytest.mark.parametrize('body, message', [
    ("{'method': 'metagater', 'grid': {'meta.gamma': [1.0]}}", "unknown field 'meta.gamma'"),
    ("{'method': 'metagater', 'grid': {'meta.beta': [1.0, 'x']}}", "value 'x' is not a number"),
    ("{'method': 'metagater', 'grid': {}}", 'the grid is empty'),
])
def test_cli_bad_sweep_file_one_line_error(tmp_path, body, message):
  path = tmp_path / 'bad_sweep.py'
  path.write_text(f'def get_sweep():\n  return {body}\n')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.sweep', '--config=configs/test.py',
       f'--sweep={path}', f'--workdir={tmp_path / "out"}'],
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1
  assert message in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1].startswith('error: ')


def test_cli_misspelt_config_field_one_line_error(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.sweep', '--config=configs/test.py',
       '--sweep=configs/sweeps/digits.py', '--config.meta.roundz=3',
       f'--workdir={tmp_path / "out"}'],
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines() == [
      "error: bad --config override: the config has no field 'roundz' (did you mean "
      "'rounds'?)"]
  assert not (tmp_path / 'out').exists()


def _row(method, validation, target, seed=0, diverged=False, sparsity=None, **hparams):
  return dict(method=method, hparams=hparams, seed=seed, diverged=diverged,
              validation_accuracy_mean=None if diverged else validation,
              accuracy=None if diverged else target, validation_sparsity_mean=sparsity,
              sparsity=sparsity, losses=[1.0, 0.5])


def test_best_is_chosen_on_validation_not_on_targets():
  from mg.sweep import results
  rows = [_row('fedavg', 0.70, 0.99, lr=0.1), _row('fedavg', 0.70, 0.99, seed=1, lr=0.1),
          _row('fedavg', 0.90, 0.60, lr=0.2), _row('fedavg', 0.80, 0.60, seed=1, lr=0.2),
          _row('fedavg', 0.99, 0.99, lr=0.3), _row('fedavg', 0.0, 0.0, seed=1, lr=0.3,
                                                    diverged=True)]
  best = results.best_per_method(rows)['fedavg']
  # lr=0.1 is best on the targets, lr=0.3 on one seed's validation but diverged on the other.
  assert best['hparams'] == {'lr': 0.2} and best['seeds'] == [0, 1]
  assert best['validation_accuracy_mean'] == pytest.approx(0.85)
  assert best['accuracy_mean'] == pytest.approx(0.60)


def test_matched_sparsity_picks_on_validation_within_tolerance():
  from mg.metagater.sweep import report as results
  rows = [_row('metagater', 0.9, 0.5, sparsity=0.50, b=1),
          _row('metagater_unaccelerated', 0.95, 0.9, sparsity=0.05, b=1),
          _row('metagater_unaccelerated', 0.80, 0.1, sparsity=0.47, b=2),
          _row('metagater_unaccelerated', 0.85, 0.1, sparsity=0.54, b=3),
          _row('metagater_unaccelerated', 0.99, 0.1, sparsity=0.60, b=4)]
  best = results.best_per_method(rows)
  assert best['metagater_unaccelerated']['hparams'] == {'b': 4}
  matched = results.matched_sparsity(rows, best)
  assert matched['hparams'] == {'b': 3} and matched['within_tolerance']
  assert matched['reference_sparsity'] == pytest.approx(0.5)
  far = results.matched_sparsity(rows[:2], results.best_per_method(rows[:2]))
  assert far['hparams'] == {'b': 1} and not far['within_tolerance']


@pytest.mark.parametrize('method, field, message', [
    # Per-FedAvg HF reads perfedavg.alpha_hf: sweeping perfedavg.alpha changes nothing.
    ('perfedavg_hf', 'perfedavg.alpha', "'perfedavg.alpha' cannot vary in a sweep of "
     'perfedavg_hf: it does not reach perfedavg_hf'),
    # Per-FedAvg adapts with its own alpha, not adapt.lr.
    ('perfedavg_fo', 'adapt.lr', 'it does not reach perfedavg_fo'),
    ('metagater_nogate', 'meta.rho', 'it does not reach metagater_nogate'),
    ('fedavg', 'per_method.metagater.beta', 'it does not reach fedavg'),
])
def test_swept_field_that_does_not_reach_its_method_is_refused(test_config, method, field,
                                                               message):
  with pytest.raises(spec.SweepError, match=message):
    metagater.members({'method': method, 'grid': {field: [0.01, 0.02]}}, test_config)


def test_shared_field_overridden_for_the_method_is_refused(test_config):
  config = test_config.copy_and_resolve_references()
  config.per_method.metagater_unaccelerated.beta = 2.0
  with pytest.raises(spec.SweepError, match=(
      "'meta.beta' does not reach metagater_unaccelerated: the config sets "
      'per_method.metagater_unaccelerated.beta=2.0')):
    metagater.members({'method': 'metagater_unaccelerated', 'grid': {'meta.beta': [1.0]}},
                  config)
  # Still sweepable for MetaGater, which the override does not touch.
  assert len(metagater.members({'method': 'metagater', 'grid': {'meta.beta': [1.0]}}, config)) == 1


def test_every_traced_field_reaches_its_method(test_config):
  from mg.metagater import methods
  for method, fields in family.TRACED_FIELDS.items():
    for field in fields:
      members = metagater.members({'method': method, 'grid': {field: [0.125, 0.25]}}, test_config)
      settings = [methods.settings(method, spec.member_config(test_config, m))
                  for m in members]
      assert settings[0] != settings[1], (method, field)


def test_sweep_needs_validation_tasks(test_config):
  config = test_config.copy_and_resolve_references()
  config.data.num_validation = 0
  with pytest.raises(spec.SweepError, match='num_validation'):
    metagater.members({'method': 'fedavg', 'grid': {'adapt.lr': [0.1]}}, config)


def test_load_reports_missing_file_and_function(tmp_path):
  with pytest.raises(spec.SweepError, match='does not exist'):
    spec.load(str(tmp_path / 'nope.py'))
  path = tmp_path / 'empty.py'
  path.write_text('X = 1\n')
  with pytest.raises(spec.SweepError, match='defines no get_sweep'):
    spec.load(str(path))
  path.write_text("def get_sweep(variant='a'):\n  return {'v': variant}\n")
  assert spec.load(f'{path}:b') == {'v': 'b'}


def test_sweep_files_of_the_configs_expand(test_config):
  from configs import cifar10, digits, mnist
  for config, name, count in ((digits, 'digits.py:bench', 16), (digits, 'digits.py', None),
                              (mnist, 'mnist.py', None), (cifar10, 'cifar10.py', None)):
    members = metagater.members(spec.load(os.path.join(ROOT, 'configs', 'sweeps', name)),
                            config.get_config())
    assert count is None or len(members) == count
    assert len({(m.method, tuple(sorted(m.values.items())), m.seed) for m in members}) \
        == len(members), name
    if count is None:
      # Equal tuning effort: every trained method, the same number of configurations
      # over its own fields, at the same seeds.
      configurations, seeds = {}, {}
      for m in members:
        configurations.setdefault(m.method, set()).add(tuple(sorted(m.values.items())))
        seeds.setdefault(m.method, set()).add(m.seed)
        assert all(f.startswith(f'per_method.{m.method}.') for f in m.values), m
      assert set(configurations) == set(family.TRACED_FIELDS), name
      assert len({len(c) for c in configurations.values()}) == 1, (name, configurations)
      assert len({frozenset(s) for s in seeds.values()}) == 1, name
