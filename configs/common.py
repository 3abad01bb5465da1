"""Fields shared by every experiment config; each config file changes a few.

Sections:
  data:      where the images come from and how they are split into tasks (nodes).
  model:     which network, which layers carry a channel gate.
  meta:      the federated (meta-)training loop shared by every method: rounds,
             sampled tasks per round, the local solve and MetaGater's outer step.
  perfedavg: the inner/outer step sizes of Per-FedAvg.
  adapt:     fast adaptation at the target tasks (one gradient step per stage).
  per_method: each method's own values of the step sizes and strengths above
             (None: the shared value), so every method runs at its own tuned
             settings (configs/sweeps/*.py choose them on validation tasks).
"""

import ml_collections
from ml_collections import config_dict

METHODS = ('fedavg', 'perfedavg_fo', 'perfedavg_hf', 'metagater_nogate',
           'metagater', 'metasnip', 'metasnip_filters')
# Each trained method's own hyperparameters (config.per_method.<method>.<name>).
PER_METHOD = {
    'fedavg': ('local_lr', 'adapt_lr'),
    'perfedavg_fo': ('alpha', 'beta'),
    'perfedavg_hf': ('alpha', 'beta'),
    'metagater_nogate': ('lam', 'local_lr', 'beta', 'adapt_lr'),
    'metagater': ('lam', 'local_lr', 'beta', 'rho', 'adapt_lr'),
    'metagater_unaccelerated': ('lam', 'local_lr', 'beta', 'rho', 'adapt_lr'),
}


def get_config() -> ml_collections.ConfigDict:
  """The defaults; a config file overrides what its setup needs."""
  config = ml_collections.ConfigDict()
  config.system = 'metagater'  # mg.systems: which package runs this config
  config.seed = 0
  # The paper averages 5 repeats; repeat r draws its own partition (seed + r)
  # and its own training keys.
  config.repeats = 1
  config.methods = METHODS
  config.eval_every = 10        # rounds between target evaluations (Fig. 4 curves).
  config.progress = True
  # Long runs survive: a checkpoint every `checkpoint_every` rounds of each method
  # (and at each method's end, and on SIGINT/SIGTERM) in <workdir>/checkpoints,
  # keeping the newest `keep_checkpoints` (an unreadable newest one falls back to
  # the one before). Rerunning the same command with the same --workdir resumes;
  # --config.resume=False starts over there, deleting its checkpoints.
  config.checkpoint_every = 10
  config.keep_checkpoints = 3
  config.resume = True
  # JAX's persistent compilation cache: a rerun loads its programs instead of
  # compiling them (mg.federated.backend.compile_cache); '' turns it off.
  config.compile_cache_dir = '~/.cache/mg/xla'
  # Fault injection for tests of the divergence guard: NaN parameters enter round
  # `debug_nan_round` (0: never) of `debug_nan_method` ('': every method).
  config.debug_nan_round = 0
  config.debug_nan_method = ''

  config.data = ml_collections.ConfigDict()
  config.data.source = 'auto'   # auto | digits | tfds | raw
  config.data.name = 'digits'   # digits | mnist | cifar10 | cifar100
  config.data.dir = config_dict.placeholder(str)
  config.data.split = 'all'     # train | test | all
  config.data.num_tasks = 20
  config.data.num_targets = 5
  # Validation tasks: disjoint from meta-training, adapted and scored like the
  # targets, used only to choose hyperparameters (never reported as results).
  # None: as many as targets if as many meta-training tasks remain, else 3.
  config.data.num_validation = config_dict.placeholder(int)
  config.data.classes_per_task = 2
  config.data.min_samples = 40
  config.data.max_samples = 100
  config.data.query_fraction = 0.3

  config.model = ml_collections.ConfigDict()
  config.model.name = 'cnn4'
  # Layer names that carry a gate; empty means the paper's default for the model.
  config.model.gated_layers = ()
  config.model.gate_hidden = 16
  config.model.tau = 1.0        # Gumbel-softmax temperature (docs/design.md s.1).

  config.meta = ml_collections.ConfigDict()
  config.meta.rounds = 100
  config.meta.tasks_per_round = 5
  config.meta.local_steps = 5   # K gradient steps of the local solve, problem (5).
  config.meta.local_lr = 0.05
  config.meta.batch_size = 32   # local minibatch; 0 means full batch.
  config.meta.lam = 1.0         # lambda of the proximal term, eq. (3)-(4).
  config.meta.beta = 1.0        # outer step beta_t (Algorithm 1 steps 8-9).
  config.meta.alpha = config_dict.placeholder(float)  # None: 2/(t+1).
  # eta_t of Ghadimi & Lan: beta (= proximal GD) | nonconvex | convex (t beta / 2).
  config.meta.eta = 'convex'
  config.meta.regularizer = 'group_lasso'             # group_lasso | lasso | none
  config.meta.rho = 0.01        # strength of R(phi).
  # How the sampled tasks' local solves are mapped: auto | vmap | unroll | scan | loop | fused
  # (mg.federated.mapping; 'auto' is the measured default of the backend).
  config.meta.mapping = 'auto'
  # With several devices, shard each round's sampled tasks over all of them (vmap and
  # fused mappings; tasks padded to a multiple of the device count with zero-weight
  # dummies). No effect on one device.
  config.meta.shard_clients = True
  # Also train MetaGater with alpha_t = 1 (plain proximal steps) for comparison,
  # at its own settings (per_method.metagater_unaccelerated).
  config.meta.compare_unaccelerated = False

  # Multi-host runs (jax.distributed.initialize); None fields: from the cluster.
  config.distributed = ml_collections.ConfigDict()
  config.distributed.enabled = False
  config.distributed.coordinator_address = config_dict.placeholder(str)
  config.distributed.num_processes = config_dict.placeholder(int)
  config.distributed.process_id = config_dict.placeholder(int)
  config.distributed.local_device_ids = config_dict.placeholder(tuple)

  config.perfedavg = ml_collections.ConfigDict()
  # Inner (personalisation) step a, first-order; a target adapts with the same a
  # (Fallah et al. personalise with their own alpha).
  config.perfedavg.alpha = 0.05
  # Hessian-free's a: its (I - a H) correction diverged at a >= 0.005 on digits.
  config.perfedavg.alpha_hf = 0.002
  config.perfedavg.beta = 0.05   # outer local step b.

  config.adapt = ml_collections.ConfigDict()
  config.adapt.lr = 0.05        # every method but Per-FedAvg (which uses its alpha).
  config.adapt.keep_frac = 0.0   # channel kept if on for more than this fraction.
  config.adapt.batch_size = 0    # support examples per step; 0 means all.
  # MetaGater's Stage I (one step on the gates); False adapts with the meta-gate as
  # trained: what the meta-gating module transfers on its own (an ablation).
  config.adapt.gate_step = True

  # Per-method values of the fields above; None falls back to the shared field
  # (lam, local_lr, beta, rho: meta.*; adapt_lr: adapt.lr; Per-FedAvg's alpha,
  # beta: perfedavg.alpha (alpha_hf for HF), perfedavg.beta). MetaSNIP adapts
  # with MetaGater w/o gating's adapt_lr.
  config.per_method = ml_collections.ConfigDict()
  for method, fields in PER_METHOD.items():
    config.per_method[method] = ml_collections.ConfigDict(
        {field: config_dict.placeholder(float) for field in fields})
  return config
