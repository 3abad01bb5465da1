"""No accuracy from a diverged model (issue 15, 3): non-finite adaptation or
evaluation, and a finite but exploding loss, mark the row diverged with the
stage and round, in a run (its sweep counterpart is in tests/test_sweep.py)."""

import json

import jax
import jax.numpy as jnp
import ml_collections

from mg.metagater import run as run_lib
from mg.metagater import train as train_lib


def _config(test_config, **overrides):
  config = ml_collections.ConfigDict(test_config.to_dict())
  for field, value in overrides.items():
    section, name = field.split('.')
    config[section][name] = value
  return config


def _run(config, workdir):
  results = run_lib.run(config, str(workdir))
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return results['rows'][0], records, (workdir / 'results.md').read_text()


def test_non_finite_adaptation_is_a_divergence_not_an_accuracy(test_config, tmp_path):
  config = _config(test_config, **{'adapt.lr': 1e38})
  config.methods = ('fedavg',)
  row, records, markdown = _run(config, tmp_path)
  assert row['diverged'] and row['diverged_round'] == 1
  assert row['diverged_stage'] in ('adaptation', 'evaluation')
  assert row['accuracy_mean'] is None and row['target_accuracy'] is None
  assert [r['stage'] for r in records if r.get('event') == 'diverged'] == [
      row['diverged_stage']]
  assert not any(r.get('event') == 'eval' for r in records)
  assert f"FedAvg diverged at round 1 ({row['diverged_stage']})" in markdown


def test_meta_local_lr_1e6_reports_no_accuracy(test_config, tmp_path):
  config = _config(test_config, **{'meta.local_lr': 1e6, 'meta.rounds': 3})
  config.methods = ('fedavg',)
  row, records, _ = _run(config, tmp_path)
  assert row['diverged'] and row['accuracy_mean'] is None
  assert row['diverged_round'] == 1  # its first evaluation or a loss 1e6 x the first
  assert [r['stage'] for r in records if r.get('event') == 'diverged'] == [
      row['diverged_stage']]


def _exploding_round(state, data, key):
  """A round whose loss grows 100x per round, every value finite."""
  del data, key
  t = state['t'] + 1
  return {'t': t}, {'loss': jnp.asarray(100.0) ** t, 'finite': jnp.asarray(True)}


def test_a_finite_loss_above_the_bound_stops_training():
  result = train_lib.train(None, {'t': jnp.asarray(0)}, _exploding_round, None,
                           jax.random.key(0), rounds=10, eval_every=10)
  # 100**4 / 100 = 1e6 is at the bound; round 5's loss is above it.
  assert result.diverged_round == 5 and result.diverged_stage == 'training'
  assert result.rounds_done == 4 and int(result.state['t']) == 4
  assert result.losses == [100.0 ** t for t in range(1, 5)]
