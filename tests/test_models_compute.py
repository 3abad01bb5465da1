"""Tests of MAC counts and parameter counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mg import models


def test_dense_macs_paper_models():
  mlp = models.build('mlp', input_shape=(28, 28, 1), num_classes=10)
  assert models.macs(mlp) == 784 * 100 + 100 * 10  # 79,400
  cnn4 = models.build('cnn4', input_shape=(32, 32, 3), num_classes=10)
  assert models.layer_macs(cnn4) == {
      'conv1': 32 * 32 * 3 * 3 * 3 * 32,    # 884,736
      'conv2': 16 * 16 * 3 * 3 * 32 * 64,   # 4,718,592
      'conv3': 8 * 8 * 3 * 3 * 64 * 128,    # 4,718,592
      'dense': 2048 * 10,                   # 20,480
  }
  assert models.macs(cnn4) == 10_342_400.0
  cnn7 = models.build('cnn7', input_shape=(32, 32, 3), num_classes=10)
  assert models.layer_macs(cnn7) == {
      'conv1': 32 * 32 * 9 * 3 * 32,     # 884,736
      'conv2': 32 * 32 * 9 * 32 * 32,    # 9,437,184
      'conv3': 16 * 16 * 9 * 32 * 64,    # 4,718,592
      'conv4': 16 * 16 * 9 * 64 * 64,    # 9,437,184
      'conv5': 8 * 8 * 9 * 64 * 128,     # 4,718,592
      'conv6': 8 * 8 * 9 * 128 * 128,    # 9,437,184
      'dense': 128 * 10,                 # 1,280
  }
  assert models.macs(cnn7) == 38_634_752.0
  # The gates do not change the dense count.
  assert models.macs(models.build('cnn4', input_shape=(32, 32, 3),
                                  num_classes=10, gating=False)) == 10_342_400.0


def test_gated_macs_hand_count_mlp():
  # mlp on 2x2x1 inputs, 3 classes: hidden 4 -> 100, out 100 -> 3.
  model = models.build('mlp', input_shape=(2, 2, 1), num_classes=3)
  assert models.macs(model) == 4 * 100 + 100 * 3  # 700
  gates = {'hidden': jnp.zeros((2, 100)).at[0, :10].set(1).at[1, :30].set(1)}
  # Example 0: 4*10 + 10*3 = 70; example 1: 4*30 + 30*3 = 210; mean 140.
  # Gate MLP: 4*16 + 16*100 = 1,664.
  assert float(models.macs(model, gates)) == 140 + 1664


def test_gated_macs_hand_count_cnn4_digits():
  model = models.build('cnn4', input_shape=(8, 8, 1), num_classes=10)
  # conv1 8*8*9*1*32 = 18,432; conv2 4*4*9*32*64 = 294,912;
  # conv3 2*2*9*64*128 = 294,912; dense 128*10 = 1,280.
  assert models.macs(model) == 18_432 + 294_912 + 294_912 + 1_280
  gates = {'conv3': jnp.zeros((2, 128)).at[0, :64].set(1).at[1, :32].set(1)}
  # conv3 with n on: 2*2*9*64*n; dense: n*10.
  # n=64: 147,456 + 640 = 148,096; n=32: 73,728 + 320 = 74,048; mean 111,072.
  # Gate MLP: 64*16 + 16*128 = 3,072.
  expected = 18_432 + 294_912 + 111_072 + 3_072
  assert float(models.macs(model, gates)) == expected
  assert float(jax.jit(lambda g: models.macs(model, g))(gates)) == expected
  # A (C,) mask is one example.
  assert float(models.macs(model, {'conv3': gates['conv3'][1]})) == (
      18_432 + 294_912 + 74_048 + 3_072)


def test_gated_macs_consecutive_gates_multiply_per_example():
  model = models.build('cnn7', input_shape=(8, 8, 1), num_classes=10)
  ones = lambda n: jnp.zeros(128).at[:n].set(1)
  gates = {'conv5': jnp.stack([ones(64), ones(128)]),
           'conv6': jnp.stack([ones(32), ones(128)])}
  # conv5: 2*2*9*64*n5 = 2,304 n5; conv6: 2*2*9*n5*n6 = 36 n5 n6; dense 10 n6.
  # Example 0 (64, 32): 147,456 + 73,728 + 320 = 221,504.
  # Example 1 (128, 128): 294,912 + 589,824 + 1,280 = 886,016. Mean 553,760.
  # Gates: (64*16 + 16*128) + (128*16 + 16*128) = 3,072 + 4,096 = 7,168.
  fixed = 8 * 8 * 9 * 1 * 32 + 8 * 8 * 9 * 32 * 32 + 4 * 4 * 9 * 32 * 64 + (
      4 * 4 * 9 * 64 * 64)  # conv1..conv4: 18,432 + 589,824 + 294,912 + 589,824
  assert float(models.macs(model, gates)) == fixed + 553_760 + 7_168
  # All on: dense count plus the gates' own cost.
  all_on = {l: jnp.ones((3, 128)) for l in ('conv5', 'conv6')}
  assert float(models.macs(model, all_on)) == models.macs(model) + 7_168
  with pytest.raises(ValueError, match='classifier'):
    models.macs(model, {'dense': jnp.ones((1, 10))})


def test_macs_of_apply_gates():
  model = models.build('cnn4', input_shape=(8, 8, 1), num_classes=10)
  params = model.init(jax.random.key(0))
  _, gates = model.apply(params, jnp.ones((5, 8, 8, 1)))
  n = np.asarray(gates['conv3']).sum(-1)
  expected = 18_432 + 294_912 + np.mean(2 * 2 * 9 * 64 * n + 10 * n) + 3_072
  np.testing.assert_allclose(float(models.macs(model, gates)), expected)


def test_param_count():
  tree = {'a': jnp.zeros((3, 4)), 'b': [jnp.zeros(5), jnp.zeros(())]}
  assert models.param_count(tree) == 12 + 5 + 1
  assert models.param_count(jax.eval_shape(lambda: tree)) == 18
  assert models.param_count({}) == 0

