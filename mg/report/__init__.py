"""Reporting: metrics log, results tables, figures and progress display.

Reproduces the presentation of the MetaGater paper: Table 1 (accuracy and
training time), Table 2 (accuracy, sparsity, MACs, adaptation time) and Fig. 4
(accuracy vs communication round). Pure numpy/matplotlib/json.
"""

from mg.report.metrics_log import MetricsLog, read_metrics
from mg.report.plots import plot_curves, plot_losses, plot_sparsity
from mg.report.progress import progress
from mg.report.results import ROW_KEYS, summarize, write_results
from mg.report.serialize import to_jsonable
from mg.report.tables import display_name, format_table

__all__ = [
    'MetricsLog', 'ROW_KEYS', 'display_name', 'format_table', 'plot_curves',
    'plot_losses', 'plot_sparsity', 'progress', 'read_metrics', 'summarize', 'to_jsonable',
    'write_results',
]
