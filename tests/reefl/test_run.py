"""The ReeFL experiment end to end on the tiny config: outputs, rows, resume, validation."""

import json
import os

from configs.reefl import test as reefl_test
from mg.reefl import run as reefl_run
from mg.data import dirichlet

import numpy as np
import pytest
from data_helpers import config_with

ROW_KEYS = {'method', 'regime', 'accuracy_mean', 'accuracy_std', 'exit_accuracy_mean',
            'exit_accuracy_std', 'ensemble_accuracy_mean', 'macs_per_exit',
            'upload_bytes_per_round', 'train_time_s', 'rounds', 'repeats',
            'validation_accuracy_mean', 'validation_exit_accuracy_mean', 'held_per_tier',
            'trainable_per_tier'}


def _small(**fields):
  config = reefl_test.get_config()
  config.methods = ('reefl', 'reefl_lastkd')
  return config_with(config, **fields)


def _log_keys(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [(r['method'], r['round']) for r in map(json.loads, f)]


def test_lda_partition_equal_sizes_and_disjoint():
  labels = np.repeat(np.arange(5), 40)
  parts = dirichlet.lda_partition(labels, 7, 1.0, np.random.default_rng(0))
  sizes = [len(p) for p in parts]
  assert sum(sizes) == 200 and max(sizes) - min(sizes) <= 1
  assert len(np.unique(np.concatenate(parts))) == 200
  kept, held = dirichlet.stratified_holdout(labels, 0.25, np.random.default_rng(0))
  assert np.all(np.bincount(labels[held]) == 10) and len(kept) == 150


@pytest.mark.parametrize('test', ['holdout', 'official'])
def test_validation_clients_are_disjoint_from_training_and_test(monkeypatch, test):
  # Each image is its own id: pixel value = row number (the official test split's
  # ids start at 10,000), so disjointness is checked on the images themselves.
  labels = np.repeat(np.arange(4), 25).astype(np.int32)

  def read_split(name, source, folder, split):
    del name, source, folder
    start = 10_000 if split == 'test' else 0
    ids = np.arange(start, start + len(labels), dtype=np.float32)
    return ids.reshape(-1, 1, 1, 1), labels

  monkeypatch.setattr(dirichlet, 'read_split', read_split)
  kwargs = dict(name='digits', source='digits', folder=None, split='all', test=test,
                test_fraction=0.2, num_clients=10, alpha=1.0, seed=3)
  split = dirichlet.client_split(**kwargs, num_validation_clients=3)
  ids = lambda images: set(images.ravel().astype(int).tolist())
  train = ids(split.train_images[np.concatenate(split.clients)])
  validation = ids(split.validation_set()[0])
  test_ids = ids(split.test_images)
  assert len(split.clients) == 7 and len(split.validation) == 3
  assert validation and not validation & train and not validation & test_ids
  assert not train & test_ids
  assert len(train | validation | test_ids) == 100 + (100 if test == 'official' else 0)
  # Holding out validation clients leaves the partition as it was: the rest train.
  everyone = [tuple(c) for c in dirichlet.client_split(**kwargs).clients]
  kept, held = [tuple(c) for c in split.clients], [tuple(c) for c in split.validation]
  assert sorted(kept + held) == sorted(everyone)
  assert kept == [c for c in everyone if c not in held]
  with pytest.raises(dirichlet.DataError, match='some clients must train'):
    dirichlet.client_split(**kwargs, num_validation_clients=10)


def test_reefl_run_writes_every_output_and_resumes(tmp_path, reefl_programs):
  config = _small()  # one model: the programs are shared
  workdir = str(tmp_path / 'run')
  doc = reefl_run.run(config, workdir, programs=reefl_programs)
  for name in ('results.json', 'results.md', 'metrics.jsonl', 'curves.png', 'exits.png',
               'teacher.png', 'config.json'):
    assert os.path.exists(os.path.join(workdir, name)), name
  rows = doc['rows']
  assert [r['method'] for r in rows] == ['reefl', 'reefl_lastkd']
  for r in rows:
    assert ROW_KEYS <= set(r)
    assert len(r['exit_accuracy_mean']) == 2 and len(r['macs_per_exit']) == 2
    assert 0.0 <= r['accuracy_mean'] <= 1.0 and 0.0 <= r['validation_accuracy_mean'] <= 1.0
  assert doc['partition']['clients'] == 8 and doc['partition']['validation_clients'] == 2
  assert {'validation_accuracy', 'validation_exit_accuracy'} <= set(
      doc['curves']['full/reefl/0'][-1])
  report = open(os.path.join(workdir, 'results.md')).read()
  assert '| ReeFL |' in report
  # Each method's own cost and size: both rows of the per-method table, tier by tier.
  held = ' / '.join(f'{t["held"] / 1e3:.1f}' for t in doc['tiers']['full/reefl'])
  assert report.count(f' | {held} | ') == 2
  # Rerunning the finished run restores every result from its checkpoint; fields that
  # only change how the run is carried out may change.
  once = _log_keys(workdir)
  assert len(once) == len(set(once)) == 4
  again = reefl_run.run(_small(progress=True, checkpoint_every=3, compile_cache_dir='',
                               keep_checkpoints=3), workdir, programs=reefl_programs)
  assert again['rows'] == rows and _log_keys(workdir) == once
  _keeps_its_config_of_record(workdir, rows, once, reefl_programs)


def _keeps_its_config_of_record(workdir, rows, once, reefl_programs):
  """The harness's guarantees, as MetaGater's runs have them (one house)."""
  from mg.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from mg.reefl import sweep as reefl_sweep  # pylint: disable=g-import-not-at-top
  # The checkpoint holds the record: without config.json another rate is still refused,
  # and the message names the field.
  os.remove(os.path.join(workdir, 'config.json'))
  with pytest.raises(ConfigError, match=r"per_method.reefl.lr: None -> 0.2"):
    reefl_run.run(_small(**{'per_method.reefl.lr': 0.2}), workdir, programs=reefl_programs)
  # A sweep is refused in a run's workdir, before touching anything.
  members = reefl_sweep.members(
      {'method': 'reefl', 'grid': {'per_method.reefl.lr': [0.1]}}, _small())
  with pytest.raises(ConfigError, match='it holds a run, not a sweep'):
    reefl_sweep.run_sweep(_small(), members, workdir, programs=reefl_programs)
  assert _log_keys(workdir) == once
  # resume=False starts over: the log holds the new run's rounds only.
  fresh = reefl_run.run(_small(resume=False, **{'per_method.reefl.lr': 0.2}), workdir,
                        programs=reefl_programs)
  assert _log_keys(workdir) == once
  assert fresh['rows'][0]['accuracy_mean'] != rows[0]['accuracy_mean']
  with open(os.path.join(workdir, 'config.json')) as f:
    record = json.load(f)
  assert record['kind'] == 'run' and record['per_method']['reefl']['lr'] == 0.2


def test_reefl_run_holds_its_workdir_and_accepts_it_only_with_data(tmp_path):
  from mg.harness import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  config = reefl_test.get_config()
  with workdir_lib.Lock(str(tmp_path)):
    with pytest.raises(workdir_lib.WorkdirError, match='in use by another run'):
      reefl_run.run(config, str(tmp_path))
  from configs.reefl import mnist as reefl_mnist  # pylint: disable=g-import-not-at-top
  from mg.data import DataError  # pylint: disable=g-import-not-at-top
  config = reefl_mnist.get_config()
  config.data.dir = str(tmp_path / 'empty')
  with pytest.raises(DataError, match='is not a folder'):
    reefl_run.run(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run' / 'config.json').exists()


def test_logged_kd_weight_is_the_one_each_method_uses():
  """ScaleFL's constant, the ramp where a ramp weighs KD, 0 where nothing is distilled."""
  from configs.reefl import test as reefl_test  # pylint: disable=g-import-not-at-top
  from mg.reefl import methods as reefl_methods  # pylint: disable=g-import-not-at-top
  from mg.reefl.algorithms import reefl  # pylint: disable=g-import-not-at-top
  config = reefl_test.get_config()
  config.fl.kd_rounds = 4.0
  config.per_method.depthfl.kd_rounds = 8.0
  weight = lambda method, r: reefl_run.kd_weight(reefl_methods.settings(method, config), r)
  assert weight('scalefl', 1) == config.baselines.scalefl_kd_weight
  assert weight('reefl', 2) == reefl.kd_weight(2, 4.0)
  assert weight('depthfl', 2) == reefl.kd_weight(2, 8.0)
  for method in ('reefl_nokd', 'exclusivefl', 'inclusivefl', 'inclusivefl_nomd'):
    assert weight(method, 2) == 0.0


def test_a_failed_reefl_run_does_not_block_the_corrected_command(tmp_path, reefl_programs):
  from mg.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from mg.reefl import config as reefl_config  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match='keep_checkpoints=0: expected an integer >= 1'):
    reefl_config.validate(_small(keep_checkpoints=0))
  bad = tmp_path / 'backbone.npz'
  bad.write_bytes(b'not an npz')
  workdir = tmp_path / 'run'
  with pytest.raises(ConfigError, match=r'model.init_checkpoint: .*backbone.npz is not a '
                     r'readable .npz backbone \(not a zip archive'):
    reefl_run.run(_small(**{'model.init_checkpoint': str(bad)}), str(workdir),
                  programs=reefl_programs)
  assert sorted(os.listdir(workdir)) == ['.lock']
  reefl_run.run(_small(), str(workdir), programs=reefl_programs)
  assert (workdir / 'results.json').exists()


def test_reefl_divergence_uses_the_harness_bound():
  from mg.harness import divergence  # pylint: disable=g-import-not-at-top
  assert not divergence.diverged(2.3, True, None)
  assert divergence.diverged(float('nan'), True, None)
  assert divergence.diverged(1.0, False, 2.3)
  assert not divergence.diverged(2.3e6, True, 2.3)
  assert divergence.diverged(2.4e6, True, 2.3)
