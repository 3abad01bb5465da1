r"""The sweep that chooses every method's settings in configs/digits.py.

  python -m experiments.sweep --config=configs/digits.py \
      --sweep=configs/sweeps/digits.py --workdir=runs/sweep-digits

Equal tuning effort: every trained method gets 9 configurations (a 3 x 3 grid
over two of its own hyperparameters, ``per_method.<method>.*``) at two seeds
(two partitions and PRNG streams), and each is chosen on the *validation*
tasks' accuracy (``sweep.md``: best per method); target accuracy is never
used to choose. MetaGater with alpha_t = 1 is tuned on its own grid (its
group-lasso threshold per round is beta * rho, not the growing eta_t * rho of
the accelerated scheme, so its rho range is wider); ``sweep.md`` also picks
it at MetaGater's sparsity (matched sparsity). MetaSNIP trains nothing: it
adapts MetaGater w/o gating's backbone with that method's step.

  python -m experiments.sweep --config=configs/digits.py \
      --sweep=configs/sweeps/digits.py:small --config.eval_every=50 \
      --workdir=runs/sweep-digits-small

The grid that chose configs/digits.py's settings: every trained method gets 4
configurations (2 x 2 over the same fields, inside the ranges above) at seed 0:
what a shared 2-core CPU could finish (the full grid's Per-FedAvg HF alone ran
30 minutes there). ``eval_every`` only sets the target curves' rounds.

  python -m experiments.sweep --config=configs/digits.py \
      --sweep=configs/sweeps/digits.py:bench --config.meta.rounds=30 --bench

The benchmark sweep: 16 MetaGater configurations (4 beta x 4 rho, seed 0),
batched against 16 sequential single runs.

  python -m experiments.sweep --config=configs/digits.py \
      --sweep=configs/sweeps/digits.py:meta_gate --config.meta.eta=convex \
      --config.adapt.gate_step=False --workdir=runs/sweep-digits-meta-gate

Whether the meta-gating module learns gates that transfer: MetaGater at the
tuned beta over a range of rho (0 turns the group lasso off), two seeds, on the
validation tasks; with ``adapt.gate_step=False`` the targets adapt with the
meta-gate as trained (Stage I skipped), so a dead meta-gate shows as chance
accuracy. Run under each ``meta.eta`` (docs/metagater_results.md, "Does the
meta-gate transfer?").
"""

BETAS = [0.25, 0.5, 1.0, 2.0]
RHOS = [0.0, 0.003, 0.01, 0.03]
SEEDS = [0, 1]


def grid(method, seeds=None, **values):
  return {'method': method, 'seeds': seeds or SEEDS,
          'grid': {f'per_method.{method}.{k}': v for k, v in values.items()}}


def get_sweep(variant: str = 'defaults'):
  if variant == 'bench':
    return {'method': 'metagater', 'seeds': [0],
            'grid': {'per_method.metagater.beta': BETAS, 'per_method.metagater.rho': RHOS}}
  if variant == 'meta_gate':
    return grid('metagater', beta=[1.0], rho=[0.0, 0.001, 0.003, 0.01, 0.03])
  if variant == 'small':
    return [
        grid('fedavg', [0], local_lr=[0.05, 0.1], adapt_lr=[0.05, 0.1]),
        grid('perfedavg_fo', [0], alpha=[0.01, 0.05], beta=[0.05, 0.1]),
        grid('perfedavg_hf', [0], alpha=[0.002, 0.01], beta=[0.05, 0.1]),
        grid('metagater_nogate', [0], beta=[1.0, 2.0], adapt_lr=[0.05, 0.1]),
        grid('metagater', [0], beta=[1.0, 2.0], rho=[0.01, 0.03]),
        grid('metagater_unaccelerated', [0], beta=[1.0, 2.0], rho=[0.03, 0.3]),
    ]
  if variant != 'defaults':
    raise ValueError(f"configs/sweeps/digits.py:{variant}: expected 'defaults', 'small', "
                     "'bench' or 'meta_gate'")
  return [
      grid('fedavg', local_lr=[0.02, 0.05, 0.1], adapt_lr=[0.02, 0.05, 0.1]),
      grid('perfedavg_fo', alpha=[0.01, 0.03, 0.1], beta=[0.02, 0.05, 0.1]),
      grid('perfedavg_hf', alpha=[0.001, 0.003, 0.01], beta=[0.02, 0.05, 0.1]),
      grid('metagater_nogate', beta=[0.5, 1.0, 2.0], adapt_lr=[0.02, 0.05, 0.1]),
      grid('metagater', beta=[0.5, 1.0, 2.0], rho=[0.01, 0.03, 0.1]),
      grid('metagater_unaccelerated', beta=[0.5, 1.0, 2.0], rho=[0.03, 0.1, 0.3]),
  ]
