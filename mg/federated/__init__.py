"""Client-side solves and their mapping across sampled tasks."""

from mg.federated.local import local_solve, sample_batch, task_slice
from mg.federated.mapping import (Algorithm, ClientOutput, STRATEGIES, make_round,
                                  resolve_strategy)
