r"""The sweep that chooses each method's learning rate in configs/reefl/mnist_baselines.py.

  python -m experiments.sweep --config=configs/reefl/mnist_baselines.py \
      --config.data.dir=DIR --sweep=configs/reefl/sweeps/mnist.py \
      --workdir=runs/sweep-reefl-mnist
  python -m experiments.sweep --config=configs/reefl/mnist.py \
      --config.data.dir=DIR --sweep=configs/reefl/sweeps/mnist.py:ablations \
      --workdir=runs/sweep-reefl-mnist-ablations

Equal tuning effort: every method gets 3 configurations of its own starting
learning rate ``per_method.<method>.lr`` (its default halved, kept, doubled:
0.025 / 0.05 / 0.1 around the code's 0.05; DepthFL with FedDyn around its own
0.1), at one seed (sized for a shared 2-core CPU; add seeds where there is
time), everything else at the config's values. Each is chosen on the 10
validation clients' accuracy, mean over exits, never on the test split; ``sweep.md``
lists the ``--config.per_method.<method>.lr`` that runs the best. The default
covers ReeFL and its baselines (the comparison table); ``:ablations`` the other
ReeFL variants, on the same grid. ``--config.regimes='("frozen",)'`` (with a
pretrained backbone) tunes another regime: the best settings differ by regime.

Run here at the ``:quick`` budget (50 rounds; ``--config.fl.rounds=50
--config.fl.kd_rounds=15.0 --config.eval_every=50`` on the full config, the same
training as ``configs/reefl/mnist.py:quick``), comparison and ablations together
(33 members) split over two processes by method variants
(``:reefl+reefl_maximum+inclusivefl+depthfl_feddyn+reefl_lastkd+reefl_nomod`` and
``:exclusivefl+inclusivefl_nomd+depthfl+scalefl+reefl_nokd``): 67 and 57 min on a
2-core CPU, both at once, with about 20 min of pauses for other measurements. The
chosen values are ``configs/reefl/mnist.py``'s ``PER_METHOD_LR``; 8 of the 11 methods
chose an end of their grid (docs/reefl_results.md).

Cost: 24 members (8 methods) by default; one member is one single run of its
method (the compiled programs are shared between members). A variant may
also name methods, ``:reefl+depthfl``, to split one sweep over processes (each in
its own workdir); every method keeps its same grid, so the choice is unchanged.
"""

SEEDS = [0]
LR = [0.025, 0.05, 0.1]         # the code's 0.05 (reeFL.yaml), halved and doubled
FEDDYN_LR = [0.05, 0.1, 0.2]    # DepthFL + FedDyn's own 0.1 (depthFL_feddyn.yaml)

COMPARISON = ('reefl', 'reefl_maximum', 'exclusivefl', 'inclusivefl', 'inclusivefl_nomd',
              'depthfl', 'depthfl_feddyn', 'scalefl')
ABLATIONS = ('reefl_lastkd', 'reefl_nokd', 'reefl_nomod')


def grid(method, lr=tuple(LR), feddyn_lr=tuple(FEDDYN_LR)):
  values = feddyn_lr if method == 'depthfl_feddyn' else lr
  return {'method': method, 'seeds': SEEDS, 'grid': {f'per_method.{method}.lr': list(values)}}


# ``:bench``: 8 members of one method (ReeFL's learning rate from 0.0125 to 0.2, one
# seed), what ``--bench`` times batched against one after another (docs/speed.md).
BENCH_LR = [0.0125, 0.0177, 0.025, 0.0354, 0.05, 0.0707, 0.1, 0.2]


def get_sweep(variant: str = 'comparison', *, lr=tuple(LR), feddyn_lr=tuple(FEDDYN_LR),
              name: str = 'mnist'):
  """``comparison``, ``ablations``, ``all``, ``bench`` or methods joined by ``+``.

  ``lr`` / ``feddyn_lr``: the grids (another sweep file may shift them);
  ``name``: that file's, for the error.
  """
  if variant == 'bench':
    return [grid('reefl', BENCH_LR)]
  named = {'comparison': COMPARISON, 'ablations': ABLATIONS, 'all': COMPARISON + ABLATIONS}
  methods = named[variant] if variant in named else variant.split('+')
  unknown = [m for m in methods if m not in COMPARISON + ABLATIONS]
  if unknown or len(set(methods)) != len(methods):
    raise ValueError(f"configs/reefl/sweeps/{name}.py:{variant}: expected 'comparison', "
                     f"'ablations', 'all', 'bench' or distinct methods joined by '+' of "
                     f"{', '.join(COMPARISON + ABLATIONS)}")
  return [grid(m, lr, feddyn_lr) for m in methods]
