"""ReeFL's per-method settings and its sweep: fields, equal effort, choice on validation."""

import importlib
import json
import os

import pytest

from mg.errors import ConfigError
from mg.federated import backend

from configs.reefl import common as reefl_common, test as reefl_test
from mg.reefl import config as reefl_config
from mg.reefl import methods as reefl_methods
from mg.reefl import run as reefl_run
from mg.reefl import sweep as reefl_sweep
from mg.reefl.algorithms import baselines, reefl
from mg.sweep import spec as spec_lib
from data_helpers import ROOT



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
  # ... and reach the algorithms: ScaleFL's and FedDyn's options.
  assert reefl_run.baseline_options(config, 'scalefl').scalefl_kd_weight == 0.5
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
  with pytest.raises(ConfigError, match='per_method.reefl.lr or fl.lr=-1.0'):
    reefl_config.validate(config)


# ---------------------------------------------------------------------- sweep


def _grid(method, field, values):
  return {'method': method, 'grid': {field: values}}


@pytest.mark.parametrize('method, field, message', [
    # DepthFL with FedDyn runs its own schedule (baselines.feddyn_lr), not fl.lr.
    ('depthfl_feddyn', 'fl.lr', "'fl.lr' cannot vary in a sweep of depthfl_feddyn: it "
     'does not reach depthfl_feddyn'),
    ('depthfl', 'per_method.scalefl.lr', 'it does not reach depthfl'),
    ('exclusivefl', 'fl.kd_rounds', 'it does not reach exclusivefl'),     # no KD term
    ('reefl', 'fl.batch_size', 'not a traced hyperparameter'),            # a program shape
])
def test_swept_field_that_does_not_reach_its_method_is_refused(method, field, message):
  with pytest.raises(reefl_sweep.spec_lib.SweepError, match=message):
    reefl_sweep.members(_grid(method, field, [0.01, 0.02]), reefl_test.get_config())


def test_shared_field_the_config_overrides_for_the_method_is_refused():
  config = reefl_test.get_config()
  config.per_method.reefl.lr = 0.1
  with pytest.raises(reefl_sweep.spec_lib.SweepError,
                     match="the config sets per_method.reefl.lr=0.1"):
    reefl_sweep.members(_grid('reefl', 'fl.lr', [0.01, 0.02]), config)
  assert len(reefl_sweep.members(_grid('depthfl', 'fl.lr', [0.01, 0.02]), config)) == 2


def test_every_sweepable_field_reaches_its_method():
  config = reefl_test.get_config()
  config.baselines.scalefl_widths = (0.5, 1.0)  # ScaleFL's own lists are for 4 or 12 exits
  for method, fields in reefl_sweep.FAMILY.fields.items():
    for field in fields:
      # min_lr stays below every lr (a schedule decays from lr to min_lr).
      values = [0.0125, 0.025] if field.endswith('min_lr') else [0.125, 0.25]
      members = reefl_sweep.members(_grid(method, field, values), config)
      runs = [reefl_methods.settings(method, reefl_sweep.spec_lib.member_config(config, m))
              for m in members]
      assert runs[0] != runs[1], (method, field)


def test_sweep_needs_validation_clients_and_one_regime():
  config = reefl_test.get_config()
  config.data.num_validation_clients = 0
  with pytest.raises(reefl_sweep.spec_lib.SweepError, match='num_validation_clients'):
    reefl_sweep.members(_grid('reefl', 'fl.lr', [0.1]), config)
  config = reefl_test.get_config()
  config.regimes = ('full', 'frozen')
  with pytest.raises(reefl_sweep.spec_lib.SweepError, match='one regime'):
    reefl_sweep.members(_grid('reefl', 'fl.lr', [0.1]), config)


@pytest.mark.parametrize('name, config_module', [
    ('mnist.py', 'mnist_baselines'), ('mnist.py:ablations', 'mnist'),
    ('cifar10.py', 'cifar10'), ('mnist_pretrained.py', 'mnist_pretrained')])
def test_sweep_files_give_every_method_equal_effort(name, config_module):
  config = importlib.import_module(f'configs.reefl.{config_module}').get_config()
  config.model.init_checkpoint = ''  # a pretrained backbone is made by a command, not here
  members = reefl_sweep.members(
      reefl_sweep.spec_lib.load(os.path.join(ROOT, 'configs', 'reefl', 'sweeps', name)), config)
  configurations, seeds = {}, {}
  for m in members:
    assert all(f.startswith(f'per_method.{m.method}.') for f in m.values), m
    configurations.setdefault(m.method, set()).add(tuple(sorted(m.values.items())))
    seeds.setdefault(m.method, set()).add(m.seed)
  assert len({len(c) for c in configurations.values()}) == 1, configurations
  assert len({frozenset(s) for s in seeds.values()}) == 1, seeds
  assert len(members) == sum(len(c) for c in configurations.values()) * len(
      next(iter(seeds.values())))


def test_a_sweep_split_by_methods_keeps_every_grid():
  from configs.reefl.sweeps import mnist as reefl_mnist  # pylint: disable=g-import-not-at-top
  whole = reefl_mnist.get_sweep('comparison')
  parts = reefl_mnist.get_sweep('reefl+depthfl') + reefl_mnist.get_sweep('exclusivefl')
  by_method = lambda studies: sorted(studies, key=lambda s: s['method'])
  assert by_method(parts) == by_method(
      [s for s in whole if s['method'] in ('reefl', 'depthfl', 'exclusivefl')])
  assert reefl_mnist.get_sweep('all') == whole + reefl_mnist.get_sweep('ablations')
  for bad in ('reefl+nope', 'reefl+reefl'):
    with pytest.raises(ValueError, match='joined by'):
      reefl_mnist.get_sweep(bad)


def test_sweep_files_cover_every_method():
  from configs.reefl.sweeps import mnist as reefl_mnist  # pylint: disable=g-import-not-at-top
  covered = {s['method'] for v in ('comparison', 'ablations') for s in reefl_mnist.get_sweep(v)}
  assert covered == set(reefl_methods.SHARED)


def _row(method, lr, validation, test, seed=0, diverged=False):
  return {'member': f'{method}(lr={lr}, seed={seed})', 'method': method,
          'hparams': {f'per_method.{method}.lr': lr}, 'seed': seed, 'diverged': diverged,
          'diverged_round': 3 if diverged else None,
          'validation_accuracy_mean': None if diverged else validation,
          'validation_exit_accuracy': None if diverged else [validation] * 2,
          'accuracy': None if diverged else test,
          'exit_accuracy': None if diverged else [test] * 2, 'train_time_s': 1.0}


def test_best_is_chosen_on_validation_never_on_test(tmp_path):
  # The test split prefers lr 0.1, validation 0.05; a diverged member never wins.
  rows = [_row('depthfl', 0.05, validation=0.80, test=0.60),
          _row('depthfl', 0.1, validation=0.70, test=0.90),
          _row('depthfl', 0.2, validation=None, test=None, diverged=True),
          _row('scalefl', 0.05, validation=0.50, test=0.40)]
  doc, text = reefl_sweep.write(str(tmp_path), rows, ['per_method.depthfl.lr'],
                                title='t', extra={})
  assert doc['best']['depthfl']['hparams'] == {'per_method.depthfl.lr': 0.05}
  assert doc['best']['depthfl']['accuracy_mean'] == 0.60
  assert '`--config.per_method.depthfl.lr=0.05`' in text and 'diverged (round 3)' in text
  on_disk = json.loads((tmp_path / 'sweep.json').read_text())
  assert len(on_disk['rows']) == 4 and (tmp_path / 'sweep.md').exists()


def test_sweep_end_to_end_reuses_programs_and_resumes(tmp_path, capsys):
  config = reefl_test.get_config()
  config.eval_every = 2                        # one evaluation, after the last round
  members = reefl_sweep.members(_grid('depthfl', 'per_method.depthfl.lr', [0.05, 0.1]), config)
  programs = {}  # this sweep's own (the session's shared ones hold other tests' models)
  doc = reefl_sweep.run_sweep(config, members, str(tmp_path), programs=programs,
                              members_mapping='vmap')
  rows = doc['rows']
  assert [r['hparams']['per_method.depthfl.lr'] for r in rows] == [0.05, 0.1]
  for r in rows:
    assert 0.0 <= r['validation_accuracy_mean'] <= 1.0 and 0.0 <= r['accuracy'] <= 1.0
    assert len(r['validation_exit_accuracy']) == 2
  best = doc['best']['depthfl']
  assert best['validation_accuracy_mean'] == max(r['validation_accuracy_mean'] for r in rows)
  # DepthFL's one program (every tier), its members batched (--members=vmap):
  # nothing compiles again over rounds (a new learning rate and KD weight each round),
  # members (another lr) or a longer sweep on the same programs.
  compiled = programs['baselines']
  assert sum(k[0] == 'exit_heads' for k in compiled) == 1
  longer = config.copy_and_resolve_references()
  longer.fl.rounds = 4
  with backend.CompileClock() as clock:
    reefl_sweep.run_sweep(longer, members, str(tmp_path / 'longer'), programs=programs,
                          members_mapping='vmap')
  assert clock.by_event['/jax/core/compile/backend_compile_duration'] == 0, clock.by_event
  for name in ('sweep.json', 'sweep.md', 'members.jsonl', 'metrics.jsonl', 'config.json'):
    assert (tmp_path / name).exists(), name
  # Rerunning keeps the finished members: nothing trains again. It resumes from its
  # checkpoint, so a members.jsonl cut mid-line (a kill while writing) is no matter:
  # it is written whole again.
  with open(tmp_path / 'members.jsonl', 'a') as f:
    f.write('{"member": "reefl(per_me')
  capsys.readouterr()
  again = reefl_sweep.run_sweep(config, members, str(tmp_path), members_mapping='vmap')
  assert '[1/2]' not in capsys.readouterr().out
  assert json.dumps(again['rows']) == json.dumps(rows)
  written = (tmp_path / 'members.jsonl').read_text().splitlines()
  assert [json.loads(line) for line in written] == rows


@pytest.mark.parametrize('name', ['mnist', 'cifar10'])
def test_tuned_learning_rates_are_points_of_the_sweep_grid(name):
  """A tuned config's chosen values come from its sweep's grid, for every method."""
  config_module = importlib.import_module(f'configs.reefl.{name}')
  sweep = importlib.import_module(f'configs.reefl.sweeps.{name}')
  grids = {s['method']: s['grid'][f"per_method.{s['method']}.lr"]
           for v in ('comparison', 'ablations') for s in sweep.get_sweep(v)}
  assert set(config_module.PER_METHOD_LR) == set(grids)
  for variant in ('full', 'quick'):
    config = config_module.get_config(variant)
    for method, values in grids.items():
      assert reefl_methods.settings(method, config)['lr'] in values, (variant, method)
  quick, full = config_module.get_config('quick'), config_module.get_config()
  assert quick.fl.kd_rounds / quick.fl.rounds == full.fl.kd_rounds / full.fl.rounds  # 30%


@pytest.mark.parametrize('regime', ['frozen', 'lora'])
def test_pretrained_regimes_are_tuned_on_the_mnist_grid(regime):
  """Each regime's own chosen values come from the pretrained sweep's grid; otherwise :quick."""
  from configs.reefl import mnist as reefl_mnist, mnist_pretrained as reefl_mnist_pretrained  # pylint: disable=g-import-not-at-top
  from configs.reefl.sweeps import mnist_pretrained as sweep  # pylint: disable=g-import-not-at-top
  config = reefl_mnist_pretrained.get_config(regime)
  assert config.regimes == (regime,) and config.model.init_checkpoint
  studies = sweep.get_sweep()
  assert {s['method'] for s in studies} == set(reefl_methods.SHARED)
  assert set(reefl_mnist_pretrained.PER_METHOD_LR) == set(reefl_mnist_pretrained.REGIMES)
  assert set(reefl_mnist_pretrained.PER_METHOD_LR[regime]) == set(reefl_methods.SHARED)
  for s in studies:
    chosen = reefl_methods.settings(s['method'], config)['lr']
    assert chosen in s['grid'][f"per_method.{s['method']}.lr"], (regime, s['method'])
  quick = reefl_mnist.get_config('quick')
  assert (config.fl.rounds, config.fl.kd_rounds, config.repeats, config.data.to_dict()) == (
      quick.fl.rounds, quick.fl.kd_rounds, quick.repeats, quick.data.to_dict())
  with pytest.raises(ValueError, match='reefl/mnist_pretrained.py:full'):
    reefl_mnist_pretrained.get_config('full')


class _Log:
  def __init__(self):
    self.records = []

  def write(self, method, round_, **fields):
    self.records.append(dict(fields, round=round_))


@pytest.mark.parametrize('method, regime, field', [
    ('reefl', 'full', 'per_method.reefl.kd_rounds'),       # Ree and the KD ramp traced
    ('depthfl_feddyn', 'lora', 'per_method.depthfl_feddyn.lr'),  # per-client FedDyn state
])
def test_batched_members_train_as_one_after_another(method, regime, field, reefl_programs):
  """Members trained together (one vmapped round) end as each trained alone."""
  config = reefl_test.get_config()
  config.regimes = (regime,)
  members = reefl_sweep.members(_grid(method, field, [0.5, 3.0]), config)
  assert reefl_sweep.groups(members, 'vmap') == [[0, 1]]
  assert reefl_sweep.groups(members, 'loop') == [[0], [1]]
  assert reefl_sweep.resolve_members('auto', 'cpu') == 'loop'
  assert reefl_sweep.resolve_members('auto', 'gpu') == 'vmap'
  _, arrays, clients = data = reefl_run.load_data(config)
  logs = [_Log(), _Log()]
  together = _Log()
  batched = reefl_sweep.train_group(config, members, regime, data, log=together, stop=None,
                                    programs={})
  alone = [reefl_run.train_method(spec_lib.member_config(config, m), method=method,
                                  regime=regime, repeat=0, data=arrays, clients=clients,
                                  log=log, stop=None, programs=reefl_programs)
           for m, log in zip(members, logs)]
  for b, a in zip(batched, alone):
    assert b['diverged'] is None and a['diverged'] is None
    for key in ('exit_accuracy', 'validation_exit_accuracy', 'ensemble_accuracy'):
      assert b[key] == a[key], key
    assert b['upload_bytes_per_round'] == a['upload_bytes_per_round']
  for m, log in zip(members, logs):
    mine = [r['loss'] for r in together.records if r['member'] == m.describe()]
    assert mine == pytest.approx([r['loss'] for r in log.records], rel=1e-5)
  # the two settings train differently (the members are not copies of one)
  assert [r['loss'] for r in logs[0].records] != [r['loss'] for r in logs[1].records]
