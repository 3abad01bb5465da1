"""Data: sources -> federated partition -> padded task arrays.

See DESIGN.md s.6 (experimental setup) and s.8 (data available offline).
"""

from mg.data.config import FIELDS, SOURCES, SPLITS, validate
from mg.data.errors import DataError
from mg.data.federated import build
from mg.data.partition import Partition, describe, partition
from mg.data.sources import Dataset, load
from mg.data.specs import SPECS, DatasetSpec
from mg.data.tasks import (FederatedData, TaskArrays, federated_arrays,
                           select_tasks, task_arrays)

__all__ = [
    'FIELDS', 'SOURCES', 'SPLITS', 'SPECS', 'DataError', 'Dataset',
    'DatasetSpec', 'FederatedData', 'Partition', 'TaskArrays', 'build',
    'describe', 'federated_arrays', 'load', 'partition', 'select_tasks',
    'task_arrays', 'validate',
]
