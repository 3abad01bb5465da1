"""Every bad ReeFL input ends in one line before any work, and writes nothing.

In this process: each kind of bad config value (``mg.reefl.config.validate``),
the workdir entries of the wrong kind and the batch against the drawn clients.
Spawned: the command line's own cases (an unknown field, a stray argument) and a
bad config value, which must print exactly one ``error:`` line, exit 1 and leave
no workdir behind.
"""

import os
import subprocess
import sys

import pytest
from data_helpers import ROOT, config_with

from configs.reefl import test as reefl_test
from mg.data import DataError
from mg.errors import ConfigError
from mg.harness import workdir as workdir_lib
from mg.reefl import config as reefl_config
from mg.reefl import run as reefl_run


def _config(**fields):
  return config_with(reefl_test.get_config(), **fields)


@pytest.mark.parametrize('fields, message', [
    # Ranges first: no check divides by zero.
    ({'model.num_exits': 0}, 'model.num_exits=0: expected an integer >= 1'),
    ({'model.heads': 0}, 'model.heads=0: expected an integer >= 1'),
    ({'model.patch_size': 0}, 'model.patch_size=0: expected an integer >= 1'),
    ({'model.ree_heads': 0}, 'model.ree_heads=0: expected an integer >= 1'),
    ({'model.ree_attn_dim': 0}, 'model.ree_attn_dim=0: expected an integer >= 1'),
    ({'model.in_chans': -1}, 'model.in_chans=-1: expected an integer >= 0'),
    ({'model.head_init_std': -0.1}, 'model.head_init_std=-0.1: expected a number >= 0'),
    ({'model.in_chans': 3}, 'the digits images have 1 channel(s)'),
    ({'model.mlp_ratio': 0.0}, 'model.mlp_ratio=0.0: expected a number > 0'),
    ({'model.depth': 3}, 'model.depth=3 is not a multiple of model.num_exits=2'),
    ({'model.ree_max_tokens': 2}, 'model.ree_max_tokens=2: Ree reads up to depth + 1 = 3'),
    ({'model.lora_rank': -1}, 'model.lora_rank=-1: expected an integer >= 0'),
    ({'model.lora_rank': 0, 'regimes': ('lora',)}, "regimes has 'lora' but model.lora_rank=0"),
    ({'seed': -1}, 'seed=-1: expected an integer >= 0'),
    ({'checkpoint_every': 0}, 'checkpoint_every=0: expected an integer >= 1'),
    ({'keep_checkpoints': 0}, 'keep_checkpoints=0: expected an integer >= 1'),
    ({'data.alpha': -1.0}, 'data.alpha=-1.0: expected a number > 0'),
    ({'data.alpha': 0.0}, 'data.alpha=0.0: expected a number > 0'),
    ({'data.split': 'bogus'}, "config.data.split='bogus' is not valid"),
    ({'data.source': 'bogus'}, "config.data.source='bogus' is not valid"),
    ({'data.test': 'official'}, "data.split='all' with data.test='official'"),
    ({'data.test_fraction': 1.5}, 'data.test_fraction=1.5: expected a fraction strictly'),
    ({'data.num_clients': 0}, 'data.num_clients=0: expected an integer >= 1'),
    ({'data.num_validation_clients': 10}, 'data.num_validation_clients=10: expected an '
     'integer in 0..9'),
    ({'data.eval_batch': 0}, 'data.eval_batch=0: expected an integer >= 1'),
    ({'fl.clients_per_round': 9}, 'fl.clients_per_round=9: expected 1..8'),
    ({'fl.min_lr': 1.0}, "per_method.reefl.min_lr or fl.min_lr=1.0 is above reefl's lr"),
    ({'fl.ema': 1.0}, 'fl.ema=1.0: expected a number in [0, 1)'),
    ({'fl.clip': -1.0}, 'fl.clip=-1.0: expected a number >= 0'),
    ({'fl.temperature': 0.0}, 'fl.temperature=0.0: expected a number > 0'),
    ({'fl.mapping': 'pmap'}, "fl.mapping='pmap': expected one of"),
    ({'fl.group_size': -1}, 'fl.group_size=-1: expected an integer >= 0'),
    ({'fl.shard_clients': 1}, 'fl.shard_clients=1: expected True or False'),
    ({'methods': ('scalefl',)}, "ScaleFL's own width lists are for [4, 12] exits, not "
     'model.num_exits=2'),
    ({'methods': ('scalefl',), 'baselines.scalefl_widths': (1.0,)},
     '1 width(s) for model.num_exits=2'),
    ({'methods': ('scalefl',), 'baselines.scalefl_widths': (-1.0, 1.0)},
     '-1.0 is not a width in (0, 1]'),
    ({'methods': ('reefl', 'reefl')}, 'a method is repeated'),
    ({'system': 'metagater'}, "system='metagater': expected a ReeFL config"),
])
def test_each_bad_value_is_one_line_naming_it(fields, message):
  with pytest.raises((ConfigError, DataError)) as error:
    reefl_config.validate(_config(**fields))
  assert message in str(error.value) and '\n' not in str(error.value), str(error.value)


def test_the_batch_is_checked_against_the_drawn_clients(tmp_path):
  with pytest.raises(ConfigError, match='fl.batch_size=100000 is more than the 90 images of '
                     'the largest training client; use at most 90'):
    reefl_run.run(_config(**{'fl.batch_size': 100000}), str(tmp_path))
  assert os.listdir(tmp_path) == ['.lock']


@pytest.mark.parametrize('entry, make, message', [
    ('.lock', os.mkdir, 'is a folder where a run keeps its lock file'),
    ('curves.png', os.mkdir, 'is a folder where a run keeps its curves.png file'),
    ('config.json', lambda p: open(p, 'w').write('{"seed": '),
     'config.json is not a readable config (JSONDecodeError)'),
])
def test_workdir_entries_of_the_wrong_kind_are_named_before_any_work(tmp_path, entry, make,
                                                                    message):
  make(str(tmp_path / entry))
  with pytest.raises(workdir_lib.WorkdirError, match=message.replace('(', r'\(').replace(
      ')', r'\)')):
    reefl_run.run(_config(), str(tmp_path))
  assert not (tmp_path / 'checkpoints').exists() and not (tmp_path / 'metrics.jsonl').exists()


@pytest.mark.parametrize('args, message', [
    (['--config.model.heads=0'], 'error: model.heads=0: expected an integer >= 1'),
    (['--config.per_method.nomethod.lr=0.1'], "error: bad --config override: the config "
     "has no field 'per_method.nomethod' (--config.per_method.nomethod.lr)"),
    (['stray'], "error: unexpected arguments ['stray']"),
])
def test_the_command_line_says_one_line_and_leaves_nothing(tmp_path, args, message):
  workdir = tmp_path / 'run'
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.main', '--config=configs/reefl/test.py',
       f'--workdir={workdir}', *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert proc.stderr.startswith(message) and proc.stderr.count('\n') == 1, proc.stderr
  assert not workdir.exists()
