"""Federated algorithms as pure function sets (see ``mg.federated.Algorithm``)."""

from mg.algorithms.fedavg import fedavg
from mg.algorithms.metagater import metagater
from mg.algorithms.perfedavg import perfedavg
