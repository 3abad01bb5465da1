"""Time per update of the accelerated proximal step against optax's Nesterov SGD.

Usage::

  python -m experiments.bench_optim [--repeats=500] [--warmup=20]

The tree is the CNN-4 + gating parameter tree of the CIFAR-10 experiment (docs/design.md
section 6: conv 32, 64, 128, dense from 2048, one gate at conv3 with hidden width 16),
built from shapes so that this benchmark depends on ``mg.optim`` and ``mg.prox`` only.
Each row times one jitted ``update`` plus ``optax.apply_updates`` (no donation), fed
back into itself, after ``--warmup`` calls; rows run interleaved so that machine drift
hits them alike; the table reports the median and the inter-quartile range. The last
line is a JSON object ``{"accelerate_us", "sgd_nesterov_us", "ratio"}`` for the
``accelerate`` + masked ``group_lasso`` update (MetaGater Algorithm 1, steps 8-9)
against ``optax.sgd(lr, momentum=0.9, nesterov=True)``. Target: ratio <= 2.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from absl import app
from absl import flags
import jax
import numpy as np
import optax

from experiments import cli
from mg import optim
from mg import prox

_REPEATS = flags.DEFINE_integer('repeats', 500, 'Timed calls per transform.')
_WARMUP = flags.DEFINE_integer('warmup', 20, 'Untimed calls per transform first.')
_BETA = flags.DEFINE_float('beta', 0.5, 'Step size of both transforms.')
_STRENGTH = flags.DEFINE_float('strength', 1e-3, 'Group-lasso strength.')


def cnn4_gated_shapes() -> dict[str, Any]:
  """Parameter shapes of CNN-4 (CIFAR-10, 10 classes) gated at conv3."""
  layer = lambda kernel: {'kernel': kernel, 'bias': kernel[-1:]}
  return {
      'theta': {
          'conv1': layer((3, 3, 3, 32)),
          'conv2': layer((3, 3, 32, 64)),
          'conv3': layer((3, 3, 64, 128)),
          'dense': layer((2048, 10)),
      },
      'phi': {'conv3': {'hidden': layer((64, 16)), 'out': layer((16, 128))}},
  }


def _random_tree(shapes, key):
  leaves, treedef = jax.tree.flatten(
      shapes, is_leaf=lambda s: isinstance(s, tuple))
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(
      treedef, [0.05 * jax.random.normal(k, s) for k, s in zip(keys, leaves)])


def gate_output_mask(params):
  """True on phi/*/out/* leaves: the group-lasso groups (docs/design.md section 2)."""
  def is_gate_output(path, _):
    names = [getattr(entry, 'key', None) for entry in path]
    return names[0] == 'phi' and names[2] == 'out'
  return jax.tree_util.tree_map_with_path(is_gate_output, params)


def _jitted_step(tx: optax.GradientTransformation) -> Callable:
  @jax.jit
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return step


def _time_interleaved(steps: dict[str, Callable], params, grads, repeats: int,
                      warmup: int) -> dict[str, np.ndarray]:
  """Seconds per call of each step, fed back into itself, run in turn."""
  carries = {name: (params, tx_init) for name, (_, tx_init) in steps.items()}
  times = {name: [] for name in steps}
  for i in range(warmup + repeats):
    for name, (step, _) in steps.items():
      start = time.perf_counter()
      carry = step(*carries[name], grads)
      jax.block_until_ready(carry)
      elapsed = time.perf_counter() - start
      carries[name] = carry
      if i >= warmup:
        times[name].append(elapsed)
  return {name: np.asarray(t) for name, t in times.items()}


def main(argv):
  cli.no_arguments(argv)
  params = _random_tree(cnn4_gated_shapes(), jax.random.key(0))
  grads = _random_tree(cnn4_gated_shapes(), jax.random.key(1))
  mask = gate_output_mask(params)
  beta = _BETA.value
  transforms = {
      'sgd_nesterov': optax.sgd(beta, momentum=0.9, nesterov=True),
      'accelerate': optim.accelerate(beta),
      'accelerate_group_lasso': optim.accelerate(
          beta, prox=prox.group_lasso, strength=_STRENGTH.value, mask=mask),
      'sgd_proximal_group_lasso': optax.chain(
          optax.sgd(beta), optim.proximal(prox.group_lasso, _STRENGTH.value, beta,
                                          mask=mask)),
  }
  steps = {name: (_jitted_step(tx), tx.init(params))
           for name, tx in transforms.items()}
  times = _time_interleaved(steps, params, grads, _REPEATS.value, _WARMUP.value)

  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  print(f'backend={jax.default_backend()} devices={jax.devices()} '
        f'params={num_params} leaves={len(jax.tree.leaves(params))} '
        f'repeats={_REPEATS.value} warmup={_WARMUP.value}')
  baseline = np.median(times['sgd_nesterov'])
  print(f'{"transform":<28}{"median_us":>12}{"p25_us":>10}{"p75_us":>10}'
        f'{"ratio":>8}')
  for name, t in times.items():
    median = np.median(t)
    print(f'{name:<28}{1e6 * median:>12.1f}{1e6 * np.percentile(t, 25):>10.1f}'
          f'{1e6 * np.percentile(t, 75):>10.1f}{median / baseline:>8.2f}')
  accelerate_s = np.median(times['accelerate_group_lasso'])
  print(json.dumps({'accelerate_us': round(1e6 * accelerate_s, 2),
                    'sgd_nesterov_us': round(1e6 * baseline, 2),
                    'ratio': round(accelerate_s / baseline, 3)}))


if __name__ == '__main__':
  app.run(main)
