"""Figures of both systems: accuracy vs communication round (MetaGater's Fig. 4,
ReeFL's curves), the per-target channel-sparsity distribution (MetaGater's
sparsity diversity), accuracy per exit and grouped bars (ReeFL).

Figures are built with ``matplotlib.figure.Figure`` directly, so no pyplot
state or interactive backend is involved, and written atomically as PNG.
"""

from __future__ import annotations

import io
import os
import pathlib
from typing import Mapping, Sequence

import numpy as np

from mg.report.serialize import atomic_write_bytes
from mg.report.tables import display_name


def _new_axes(figsize: tuple[float, float]):
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  figure = Figure(figsize=figsize, dpi=120, layout='constrained')
  return figure, figure.add_subplot()


def _save_png(figure, path: str | os.PathLike) -> pathlib.Path:
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png')
  return atomic_write_bytes(path, buffer.getvalue())


def _floats(values, name: str) -> np.ndarray:
  """A 1-d float64 array; None entries (e.g. diverged rounds) become NaN (gaps)."""
  array = np.array(values, dtype=np.float64)
  if array.ndim != 1:
    raise ValueError(f'{name} must be a 1-d sequence, got shape {array.shape}')
  return array


def _finish_rounds_plot(figure, axes, path, ylabel: str, title: str | None):
  """Labels, grid, legend and title of a per-round plot; writes the PNG."""
  axes.set_xlabel('Communication round')
  axes.set_ylabel(ylabel)
  axes.grid(alpha=0.3)
  axes.legend()
  if title:
    axes.set_title(title)
  return _save_png(figure, path)


def plot_curves(
    path: str | os.PathLike,
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    title: str | None = None,
) -> pathlib.Path:
  """Plots target accuracy (%) vs communication round, as the paper's Fig. 4.

  One line per method with a shaded band of +-1 std; the legend uses display
  names, so variants such as ``'metagater (alpha=1)'`` work as keys too.

  Args:
    path: the PNG file to write.
    curves: ``{method: {'round': [...], 'accuracy_mean': [...],
      'accuracy_std': [...]}}`` with accuracies as fractions; ``accuracy_std``
      may be missing or None (no band) and entries may be None (gaps).
    title: optional figure title.

  Returns:
    `path` as a ``pathlib.Path``.
  """
  if not curves:
    raise ValueError('plot_curves needs at least one curve')
  figure, axes = _new_axes((6.4, 4.2))
  for method, curve in curves.items():
    rounds = _floats(curve['round'], f'{method} round')
    mean = 100.0 * _floats(curve['accuracy_mean'], f'{method} accuracy_mean')
    if mean.shape != rounds.shape:
      raise ValueError(f'{method}: {len(rounds)} rounds but {len(mean)} accuracies')
    marker = 'o' if len(rounds) <= 40 else None
    (line,) = axes.plot(rounds, mean, marker=marker, markersize=3, label=display_name(method))
    if curve.get('accuracy_std') is not None:
      std = 100.0 * _floats(curve['accuracy_std'], f'{method} accuracy_std')
      if std.shape != rounds.shape:
        raise ValueError(f'{method}: {len(rounds)} rounds but {len(std)} stds')
      axes.fill_between(rounds, mean - std, mean + std, color=line.get_color(),
                        alpha=0.2, linewidth=0)
  return _finish_rounds_plot(figure, axes, path, 'Accuracy (%)', title)


def plot_sparsity(
    path: str | os.PathLike,
    per_target: Mapping[str, Sequence[float] | None],
    title: str | None = None,
) -> pathlib.Path | None:
  """Box plot and jittered points of channel sparsity (%) per target task.

  Shows the spread of sparsity across target tasks: task-specific gating gives
  each target its own sparsity level (the paper's sparsity diversity).

  Args:
    path: the PNG file to write.
    per_target: ``{method: [sparsity per target, fraction]}``; methods whose
      value is None (no gates) are skipped, as are non-finite entries.
    title: optional figure title.

  Returns:
    `path`, or None (and nothing written) when no method has sparsity values.
  """
  data = {}
  for method, values in per_target.items():
    if values is None:
      continue
    array = 100.0 * _floats(values, f'{method} sparsity')
    array = array[np.isfinite(array)]
    if array.size:
      data[method] = array
  if not data:
    return None
  figure, axes = _new_axes((max(4.0, 1.4 * len(data) + 2.0), 4.2))
  positions = np.arange(1, len(data) + 1)
  axes.boxplot(list(data.values()), positions=positions, widths=0.5, showfliers=False)
  rng = np.random.default_rng(0)  # fixed jitter: the same data gives the same figure.
  for position, values in zip(positions, data.values()):
    jitter = rng.uniform(-0.12, 0.12, size=values.size)
    axes.scatter(position + jitter, values, s=14, alpha=0.7, zorder=3)
  axes.set_xticks(positions, labels=[display_name(method) for method in data],
                  rotation=15 if len(data) > 3 else 0)
  axes.set_ylabel('Channel sparsity (%)')
  axes.grid(axis='y', alpha=0.3)
  axes.set_title(title or 'Channel sparsity per target task')
  return _save_png(figure, path)


def plot_losses(
    path: str | os.PathLike,
    losses: Mapping[str, Sequence[float]],
    title: str | None = None,
    smooth: int = 5,
) -> pathlib.Path:
  """Plots the mean local training loss of every round, one line per method.

  The meta-objective's convergence in rounds (the accelerated outer loop
  against plain proximal steps, docs/design.md s.3). Each curve is shown raw (faint)
  and as a trailing moving average over ``smooth`` rounds.

  Args:
    path: the PNG file to write.
    losses: ``{method: [loss of round 1, 2, ...]}``.
    title: optional figure title.
    smooth: moving-average window in rounds (1: none).

  Returns:
    `path` as a ``pathlib.Path``.
  """
  if not losses:
    raise ValueError('plot_losses needs at least one curve')
  figure, axes = _new_axes((6.4, 4.2))
  for method, values in losses.items():
    values = _floats(values, f'{method} loss')
    rounds = np.arange(1, len(values) + 1)
    window = max(1, min(smooth, len(values)))
    averaged = np.convolve(values, np.ones(window) / window, mode='valid')
    (line,) = axes.plot(rounds[window - 1:], averaged, label=display_name(method))
    if window > 1:
      axes.plot(rounds, values, color=line.get_color(), alpha=0.25, linewidth=0.8)
  axes.set_yscale('log')
  return _finish_rounds_plot(figure, axes, path, 'Mean local training loss', title)


def plot_per_exit(path: str | os.PathLike, series: Mapping[str, Mapping[str, Sequence[float]]],
                  title: str | None = None) -> pathlib.Path:
  """Accuracy (%) at each exit, one line with error bars per method.

  Args:
    path: the PNG file to write.
    series: ``{method or label: {'mean': [...], 'std': [...]}}``, fractions per
      exit (``std`` may be None).
    title: optional figure title.
  """
  if not series:
    raise ValueError('plot_per_exit needs at least one series')
  figure, axes = _new_axes((6.4, 4.2))
  exits = 0
  for label, s in series.items():
    mean = 100.0 * _floats(s['mean'], f'{label} mean')
    std = None if s.get('std') is None else 100.0 * _floats(s['std'], f'{label} std')
    x = np.arange(1, len(mean) + 1)
    exits = max(exits, len(mean))
    axes.errorbar(x, mean, yerr=std, marker='o', capsize=3, label=display_name(label))
  axes.set_xlabel('Exit')
  axes.set_ylabel('Accuracy (%)')
  axes.set_xticks(np.arange(1, exits + 1))
  axes.grid(alpha=0.3)
  axes.legend()
  if title:
    axes.set_title(title)
  return _save_png(figure, path)


def plot_grouped_bars(path: str | os.PathLike,
                      panels: Mapping[str, Mapping[str, Sequence[float]]], *,
                      xlabel: str, ylabel: str) -> pathlib.Path:
  """One panel per key of ``panels``, each with grouped bars at positions 1..n.

  Args:
    path: the PNG file to write.
    panels: ``{panel title: {group label: [height at 1, at 2, ...]}}``.
    xlabel, ylabel: the axes' labels.
  """
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  if not panels:
    raise ValueError('plot_grouped_bars needs at least one panel')
  figure = Figure(figsize=(5 * len(panels), 3.6), dpi=120, layout='constrained')
  for index, (title, groups) in enumerate(panels.items()):
    axes = figure.add_subplot(1, len(panels), index + 1)
    width = 0.8 / max(len(groups), 1)
    for i, (label, heights) in enumerate(groups.items()):
      heights = _floats(heights, f'{title} {label}')
      axes.bar(np.arange(1, len(heights) + 1) + (i - (len(groups) - 1) / 2) * width, heights,
               width, label=label)
    axes.set_title(display_name(title))
    axes.set_xticks(np.arange(1, max((len(h) for h in groups.values()), default=0) + 1))
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.legend(fontsize=8)
  return _save_png(figure, path)
