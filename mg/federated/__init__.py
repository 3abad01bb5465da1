"""Client-side solves, their mapping across sampled tasks, device sharding, server state."""

from mg.federated.backend import configure
from mg.federated.local import fused_tasks, local_solve, sample_batch, task_slice
from mg.federated.mapping import (Algorithm, ClientOutput, NotFusable, Round, SHARDABLE,
                                  STRATEGIES, TRACEABLE, default_strategy, fallback_strategy,
                                  make_round, map_clients, resolve_strategy)
from mg.federated.sharding import (client_mesh, initialize_distributed, place,
                                   round_mesh)
