"""Data: sources -> federated partition -> padded task arrays.

See docs/design.md s.6 (experimental setup) and "Data" (preparing datasets).
"""

from mg.data.config import FIELDS, SOURCES, SPLITS, num_validation, validate, validate_source
from mg.data.errors import DataError
from mg.data.federated import arrays_for, build, info_of, load_checked, partition_for
from mg.data.partition import Partition, describe, partition, row_bounds
from mg.data.sources import Dataset, load
from mg.data.specs import SPECS, DatasetSpec
from mg.data.tasks import (FederatedData, TaskArrays, federated_arrays,
                           masked_mean, select_tasks, task_arrays)

__all__ = [
    'FIELDS', 'SOURCES', 'SPLITS', 'SPECS', 'DataError', 'Dataset',
    'DatasetSpec', 'FederatedData', 'Partition', 'TaskArrays', 'arrays_for', 'build',
    'info_of', 'load_checked', 'partition_for',
    'describe', 'federated_arrays', 'load', 'masked_mean', 'num_validation', 'partition',
    'row_bounds', 'select_tasks', 'task_arrays', 'validate', 'validate_source',
]
