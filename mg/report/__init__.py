"""Reporting: metrics log, results tables, figures and progress display.

One vocabulary for both systems: display names (registered by each system's
method registry), percentages, markdown tables, figures and mean curves over
repeats. MetaGater's Table 1 / Table 2 / Fig. 4 and ReeFL's per-exit tables
and figures are built from these pieces. Pure numpy/matplotlib/json.
"""

from mg.report.metrics_log import MetricsLog, read_metrics
from mg.report.plots import (plot_curves, plot_grouped_bars, plot_losses, plot_per_exit,
                             plot_sparsity)
from mg.report.progress import progress
from mg.report.results import ROW_KEYS, mean_curve, summarize, write_results
from mg.report.serialize import to_jsonable
from mg.report.tables import (display_name, format_table, markdown_table, percent,
                              percent_pm, register_names)

__all__ = [
    'MetricsLog', 'ROW_KEYS', 'display_name', 'format_table', 'markdown_table',
    'mean_curve', 'percent', 'percent_pm', 'plot_curves', 'plot_grouped_bars',
    'plot_losses', 'plot_per_exit', 'plot_sparsity', 'progress', 'read_metrics',
    'register_names', 'summarize', 'to_jsonable', 'write_results',
]
