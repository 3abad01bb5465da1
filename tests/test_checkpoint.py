"""Checkpoints: exact round trips, atomic keep-the-last-few, fallback, interrupts.

Unit tests of ``mg.harness.checkpoint`` and of ``mg.metagater.train.train``'s resume path on a
tiny quadratic problem (no network to compile); the end-to-end kill-and-resume
test of the entry point is in ``tests/test_resume.py``.
"""

import errno
import glob
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mg.harness import checkpoint
from mg import optim
from mg.metagater import train as train_lib
from mg.federated import server as server_lib


def _state():
  """A MetaGater-like server state: params, accelerate state, hparams, round."""
  params = {'theta': {'w': jnp.arange(6, dtype=jnp.float32).reshape(2, 3)},
            'phi': {'b': jnp.ones((3,), jnp.float32)}}
  opt_state = optim.accelerate(beta=0.5).init(params)
  return server_lib.ServerState(params, opt_state, server_lib.as_hparams(lam=1.0, beta=0.5),
                            jnp.zeros((), jnp.int32))


def _avals(tree):
  return [(x.shape, x.dtype, x.weak_type, x.committed) for x in jax.tree.leaves(tree)]


def test_restore_like_gives_the_live_types_and_no_recompilation():
  state = _state()
  step = jax.jit(lambda s: s._replace(
      params=jax.tree.map(lambda p: p * 0.5 + 1.0, s.params), round=s.round + 1))
  live = step(state)                       # as the loop holds it after a round
  step(live)
  assert step._cache_size() == 1
  restored = checkpoint.restore_like(state, checkpoint.host_leaves(live))
  assert _avals(restored) == _avals(live)
  assert isinstance(restored.opt_state, optim.AccelerateState)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(live)):
    np.testing.assert_array_equal(a, b)
  step(restored)
  assert step._cache_size() == 1           # the same compiled program


def test_typed_keys_round_trip_through_key_data():
  key = jax.random.fold_in(jax.random.key(3), 7)
  (data,) = checkpoint.host_leaves(key)
  assert data.dtype == np.uint32
  back = checkpoint.restore_like(jax.random.key(0), [data])
  np.testing.assert_array_equal(jax.random.key_data(back), jax.random.key_data(key))
  np.testing.assert_array_equal(jax.random.uniform(back, (3,)), jax.random.uniform(key, (3,)))


def test_restore_like_refuses_other_shapes_dtypes_and_counts():
  state = _state()
  leaves = checkpoint.host_leaves(state)
  with pytest.raises(checkpoint.CheckpointError, match='arrays where'):
    checkpoint.restore_like(state, leaves[:-1])
  bad = list(leaves)
  bad[0] = bad[0].astype(np.float64)
  with pytest.raises(checkpoint.CheckpointError, match='float64'):
    checkpoint.restore_like(state, bad)


def _arrays(value):
  return {'rng': np.arange(2, dtype=np.uint32),
          'states': {'m': [np.full((3,), value, np.float32), np.int32(value)]}}


def test_store_keeps_the_newest_and_restores_exactly(tmp_path):
  store = checkpoint.Store(str(tmp_path / 'ck'), keep=2)
  for value in (1, 2, 3):
    assert store.save(_arrays(value), {'where': f'round {value}'}) == value
  assert store.steps() == [2, 3]
  restored = store.restore_latest()
  assert restored.step == 3 and restored.progress['where'] == 'round 3'
  np.testing.assert_array_equal(restored.arrays['states']['m'][0], np.full((3,), 3.0))
  assert restored.arrays['states']['m'][1].dtype == np.int32
  store.close()


# orbax leaves an asyncio callback behind when a read fails; it is harmless.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_a_corrupted_newest_checkpoint_falls_back_to_the_previous(tmp_path):
  store = checkpoint.Store(str(tmp_path / 'ck'), keep=3)
  for value in (1, 2, 3):
    store.save(_arrays(value), {'where': f'round {value}'})
  for path in glob.glob(str(tmp_path / 'ck' / '3' / 'arrays' / '**' / 'd' / '*'),
                        recursive=True):
    with open(path, 'wb') as f:
      f.write(b'garbage')
  notes = []
  restored = store.restore_latest(log=notes.append)
  assert restored.step == 2 and restored.progress['where'] == 'round 2'
  assert 'checkpoint 3 is unreadable' in notes[0] and 'falling back' in notes[0]
  # A step whose arrays read back but differ from their saved digest.
  progress_file = tmp_path / 'ck' / '2' / 'progress' / 'metadata'
  text = progress_file.read_text()
  digest = restored.progress['digest']
  progress_file.write_text(text.replace(digest, digest[::-1]))
  notes.clear()
  restored = store.restore_latest(log=notes.append)
  assert restored.step == 1 and len(notes) == 2
  assert 'checkpoint 2 is corrupted' in notes[1]
  # A new save goes after every step on disk, readable or not.
  assert store.save(_arrays(4), {'where': 'round 4'}) == 4
  store.close()


def test_an_unfinished_save_is_ignored(tmp_path):
  store = checkpoint.Store(str(tmp_path / 'ck'), keep=3)
  store.save(_arrays(1), {'where': 'round 1'})
  # What a crash in the middle of a save leaves: a temporary folder, never renamed.
  partial = tmp_path / 'ck' / '2.orbax-checkpoint-tmp-1700000000'
  (partial / 'arrays').mkdir(parents=True)
  (partial / 'arrays' / 'half-written').write_bytes(b'\0' * 10)
  reopened = checkpoint.Store(str(tmp_path / 'ck'), keep=3)
  assert reopened.steps() == [1]
  assert reopened.restore_latest().progress['where'] == 'round 1'
  assert not partial.exists()
  assert reopened.save(_arrays(2), {'where': 'round 2'}) == 2
  assert reopened.restore_latest().progress['where'] == 'round 2'
  store.close()
  reopened.close()


def test_stop_request_turns_a_signal_into_a_flag_and_restores_handlers():
  before = signal.getsignal(signal.SIGTERM)
  with checkpoint.StopRequest() as stop:
    assert not stop
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop and stop.signum == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is before
  error = checkpoint.Interrupted(signal.SIGTERM, 'round 4 of metagater (repeat 1)')
  assert error.exit_code == 143 and 'round 4 of metagater' in str(error)


_SECOND_SIGNAL = """
import time
from mg.harness import checkpoint
with checkpoint.StopRequest() as stop:
  print('ready', flush=True)
  while not stop:
    time.sleep(0.01)
  print('first', flush=True)
  sum(range(10**12))  # a long native call, as in the final writing: no handler runs
print('finished', flush=True)
"""


def test_a_second_sigint_stops_at_once_even_inside_a_native_call():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.Popen([sys.executable, '-c', _SECOND_SIGNAL], cwd=root,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline() == 'ready\n'
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline() == 'first\n'
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)
  finally:
    proc.kill()
  assert proc.returncode == -signal.SIGINT
  assert 'send SIGINT again to stop at once' in proc.stderr.read()


class _Quadratic:
  """A federated "method" minimising 0.5 ||x - 3||^2 with noisy gradient steps."""

  class algorithm:  # pylint: disable=invalid-name
    output = staticmethod(lambda state: state.params)


@jax.jit
def _round(state, data, key):
  del data
  noise = 0.1 * jax.random.normal(key, state.params['x'].shape)
  grad = state.params['x'] - 3.0 + noise
  x = state.params['x'] - state.hparams['lr'] * grad
  loss = 0.5 * jnp.sum((state.params['x'] - 3.0) ** 2)
  return (state._replace(params={'x': x}, round=state.round + 1),
          {'loss': loss, 'finite': jnp.all(jnp.isfinite(x))})


def _quadratic_state():
  return server_lib.ServerState({'x': jnp.zeros((4,), jnp.float32)}, (),
                            server_lib.as_hparams(lr=0.3), jnp.zeros((), jnp.int32))


def _evaluate(params, t):
  del t
  err = np.abs(np.asarray(params['x']) - 3.0)
  return train_lib.TargetScores(1.0 - err, None, None, float('nan'))


def test_train_stopped_and_resumed_equals_uninterrupted():
  key = jax.random.key(5)
  common_args = dict(rounds=7, eval_every=2, evaluate=_evaluate, keep_outputs=True)
  full = train_lib.train(_Quadratic, _quadratic_state(), _round, None, key, **common_args)
  saved = []
  calls = iter(range(100))
  first = train_lib.train(
      _Quadratic, _quadratic_state(), _round, None, key, checkpoint=saved.append,
      checkpoint_every=2, should_stop=lambda: next(calls) == 2, **common_args)
  assert first.stopped and first.rounds_done == 3
  assert [p.rounds_done for p in saved] == [2, 3]
  # Resume from the checkpointed progress, its state through host arrays.
  point = saved[-1]
  point = point._replace(state=checkpoint.restore_like(
      _quadratic_state(), checkpoint.host_leaves(point.state)))
  rest = train_lib.train(_Quadratic, None, _round, None, key, resume=point, **common_args)
  assert not rest.stopped and rest.rounds_done == 7
  np.testing.assert_array_equal(rest.state.params['x'], full.state.params['x'])
  assert rest.losses == full.losses and rest.curve == full.curve
  assert sorted(rest.outputs) == sorted(full.outputs) == [2, 4, 6, 7]


def test_train_reports_the_round_of_an_injected_nan_and_keeps_the_last_good_state():
  key = jax.random.key(0)
  saved = []
  result = train_lib.train(_Quadratic, _quadratic_state(), _round, None, key, rounds=6,
                           eval_every=1, checkpoint=saved.append, checkpoint_every=1,
                           nan_at_round=4)
  assert result.diverged_round == 4 and result.rounds_done == 3
  assert len(result.losses) == 3
  assert np.all(np.isfinite(result.state.params['x']))
  assert all(np.all(np.isfinite(p.state.params['x'])) for p in saved)
  assert [p.rounds_done for p in saved] == [1, 2, 3]


def test_a_disk_full_during_a_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  store = checkpoint.Store(str(tmp_path / 'ck'), keep=3)
  for value in (1, 2):
    store.save(_arrays(value), {'where': f'round {value}'})

  async def no_space(self, x, directory):
    del self, x, directory
    raise OSError(errno.ENOSPC, 'No space left on device')

  handler = checkpoint.ocp.handlers.JsonCheckpointHandler
  monkeypatch.setattr(handler, '_save_fn', no_space)
  with pytest.raises(checkpoint.CheckpointError) as error:
    store.save(_arrays(3), {'where': 'round 3'})
  store.close()
  message = str(error.value)
  assert 'could not write checkpoint 3' in message and 'the disk is full' in message
  assert 'checkpoint 2' in message and 'rerun the same command' in message
  assert '\n' not in message
  monkeypatch.undo()
  reopened = checkpoint.Store(str(tmp_path / 'ck'), keep=3)
  assert reopened.steps() == [1, 2]
  assert reopened.restore_latest().progress['where'] == 'round 2'
  assert reopened.save(_arrays(3), {'where': 'round 3'}) == 3
  reopened.close()
  # The unfinished save is gone (removed in the background when a store opens).
  assert sorted(os.listdir(tmp_path / 'ck')) == ['1', '2', '3']

