"""Markdown and plain-text tables in the layout of the MetaGater paper.

Table 1 of the paper compares accuracy and training time (with the number of
local updates); Table 2 compares accuracy, channel sparsity (mean and its
spread across target tasks), compute and adaptation time. Accuracies and
sparsities are fractions in the rows and printed as percentages.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

# Method name -> display name, filled by each system's method registry
# (``register_names``): the core knows no system's methods.
DISPLAY_NAMES: dict = {}

MISSING_MD = '—'
MISSING_TEXT = '-'
DIVERGED = 'diverged'
NOT_RUN = 'not run'


def register_names(names: Mapping[str, str]) -> None:
  """Adds a system's ``{method: display name}`` to the names every table and plot uses."""
  DISPLAY_NAMES.update(names)


def display_name(method: str) -> str:
  """The paper's name for `method` (as registered); a variant suffix is kept.

  ``'metagater (alpha=1)'`` -> ``'MetaGater (alpha=1)'``; unknown names are
  returned as given.
  """
  if method in DISPLAY_NAMES:
    return DISPLAY_NAMES[method]
  for key in sorted(DISPLAY_NAMES, key=len, reverse=True):
    if method.startswith(key) and method[len(key)] in ' (':
      return DISPLAY_NAMES[key] + method[len(key):]
  return method


def _percent(value: float | None, missing: str) -> str:
  return missing if value is None else f'{100.0 * value:.2f}'


def _percent_pm(mean: float | None, std: float | None, missing: str, pm: str) -> str:
  if mean is None:
    return missing
  if std is None:
    return _percent(mean, missing)
  return f'{100.0 * mean:.2f}{pm}{100.0 * std:.2f}'


def percent(value: float | None) -> str:
  """A fraction in % for markdown (two decimals), or a dash for None."""
  return _percent(value, MISSING_MD)


def percent_pm(mean: float | None, std: float | None) -> str:
  """``mean ± std`` in % for markdown; the mean alone without a std; a dash for None."""
  return _percent_pm(mean, std, MISSING_MD, ' ± ')


def _setting(value: Any, missing: str) -> str:
  if value is None:
    return missing
  if isinstance(value, list):
    return '/'.join(_setting(item, missing) for item in value)
  return str(value)


def _seconds(value: float | None, missing: str) -> str:
  return missing if value is None else f'{value:.1f}'


def _milliseconds(value: float | None, missing: str) -> str:
  return missing if value is None else f'{1000.0 * value:.2f}'


def _accuracy(row: dict, missing: str, pm: str, mark: str) -> str:
  cell = _percent_pm(row.get('accuracy_mean'), row.get('accuracy_std'), missing, pm)
  if row.get('accuracy_std_over') == 'targets' and row.get('accuracy_std') is not None:
    cell += mark
  return cell


# Columns: (header, cell(row, missing) -> str, is_metric). Metric cells of a
# diverged row read 'diverged', those of a method not run 'not run'.
Column = tuple[str, Callable[[dict, str], str], bool]

def _std_percent(value: float | None, missing: str) -> str:
  return missing if value is None else f'{100.0 * value:.2f}'


TABLE1: tuple[Column, ...] = (
    ('Method', lambda row, m: display_name(row['method']), False),
    ('Local updates', lambda row, m: _setting(row.get('local_steps'), m), False),
    ('Accuracy (%)', lambda row, m: _accuracy(row, m, ' ± ', '†'), True),
    ('Std across targets', lambda row, m: _std_percent(row.get('accuracy_std_targets'), m),
     True),
    ('Training time (s)', lambda row, m: _seconds(row.get('train_time_s'), m), True),
)

TABLE2: tuple[Column, ...] = (
    ('Method', lambda row, m: display_name(row['method']), False),
    ('Accuracy (%)', lambda row, m: _accuracy(row, m, ' ± ', '†'), True),
    ('Channel sparsity (%)', lambda row, m: _percent_pm(
        row.get('sparsity_mean'), row.get('sparsity_std'), m, ' ± '), True),
    ('Weight sparsity (%)', lambda row, m: _percent_pm(
        row.get('weight_sparsity_mean'), row.get('weight_sparsity_std'), m, ' ± '), True),
    ('MACs vs dense (%)', lambda row, m: _percent(row.get('macs_ratio'), m), True),
    ('Adaptation time (ms)', lambda row, m: _milliseconds(row.get('adapt_time_s'), m), True),
)

SPEED: tuple[Column, ...] = (
    ('Method', lambda row, m: display_name(row['method']), False),
    ('Seconds per round', lambda row, m: _number_or(row.get('seconds_per_round'), m, '.4f'),
     True),
    ('Images per second', lambda row, m: _number_or(row.get('images_per_second'), m, ',.0f'),
     True),
    ('Compile (s)', lambda row, m: _number_or(row.get('compile_s'), m, '.1f'), True),
)

TERMINAL: tuple[Column, ...] = (
    ('Method', lambda row, m: display_name(row['method']), False),
    ('Local', lambda row, m: _setting(row.get('local_steps'), m), False),
    ('Rounds', lambda row, m: _setting(row.get('rounds'), m), False),
    ('Accuracy (%)', lambda row, m: _accuracy(row, m, ' +- ', '*'), True),
    ('Channel sp. (%)', lambda row, m: _percent_pm(
        row.get('sparsity_mean'), row.get('sparsity_std'), m, ' +- '), True),
    ('Weight sp. (%)', lambda row, m: _percent_pm(
        row.get('weight_sparsity_mean'), row.get('weight_sparsity_std'), m, ' +- '), True),
    ('MACs (%)', lambda row, m: _percent(row.get('macs_ratio'), m), True),
    ('Train (s)', lambda row, m: _seconds(row.get('train_time_s'), m), True),
    ('Adapt (ms)', lambda row, m: _milliseconds(row.get('adapt_time_s'), m), True),
    ('Repeats', lambda row, m: _setting(row.get('repeats'), m), False),
)


def _number_or(value: float | None, missing: str, spec: str) -> str:
  return missing if value is None else format(value, spec)


def table_cells(rows: Sequence[dict], columns: Sequence[Column], missing: str) -> list[list[str]]:
  """The header and one list of cell strings per row."""
  cells = [[header for header, _, _ in columns]]
  for row in rows:
    flag = DIVERGED if row.get('diverged') else NOT_RUN if row.get('not_run') else None
    cells.append([flag if flag and is_metric else cell(row, missing)
                  for _, cell, is_metric in columns])
  return cells


def markdown_table(rows: Sequence[dict], columns: Sequence[Column]) -> str:
  """A GitHub-markdown table; numeric columns right-aligned."""
  header, *body = table_cells(rows, columns, MISSING_MD)
  align = ['---' if index == 0 else '---:' for index in range(len(header))]
  lines = ['| ' + ' | '.join(line) + ' |' for line in (header, align, *body)]
  return '\n'.join(lines)


def format_table(rows: Sequence[dict]) -> str:
  """A plain-text (ASCII) table of the main row keys, for the terminal.

  Args:
    rows: results rows (see `mg.report.summarize`).

  Returns:
    Aligned lines: method name left-aligned, numbers right-aligned; '-' where a
    key does not apply, 'diverged' (or 'not run') in place of numbers of a
    diverged row (or of a method that was not run).
  """
  cells = table_cells(rows, TERMINAL, MISSING_TEXT)
  widths = [max(len(line[index]) for line in cells) for index in range(len(cells[0]))]

  def render(line: list[str]) -> str:
    return '  '.join(cell.ljust(width) if index == 0 else cell.rjust(width)
                     for index, (cell, width) in enumerate(zip(line, widths))).rstrip()

  rule = '  '.join('-' * width for width in widths)
  return '\n'.join([render(cells[0]), rule, *(render(line) for line in cells[1:])])


def partition_lines(partition: dict | None) -> list[str]:
  """Markdown bullet lines summarising the federated partition (missing keys skipped)."""
  partition = partition or {}
  lines = []
  counts = [f'{partition[key]} {label}' for key, label in
            (('num_train_tasks', 'meta-training'), ('num_validation', 'validation'),
             ('num_targets', 'targets'))
            if partition.get(key) is not None]
  if partition.get('num_tasks') is not None:
    detail = f" ({', '.join(counts)})" if counts else ''
    lines.append(f"- Tasks: {partition['num_tasks']}{detail}")
  elif counts:
    lines.append(f"- Tasks: {', '.join(counts)}")
  samples = partition.get('samples_per_task') or {}
  stats = [f'{label} {_number(samples[key])}' for key, label in
           (('min', 'min'), ('max', 'max'), ('mean', 'mean')) if samples.get(key) is not None]
  if stats:
    total = f"; total {_number(samples['total'])}" if samples.get('total') is not None else ''
    lines.append(f"- Samples per task: {', '.join(stats)}{total}")
  return lines or ['- (no partition statistics)']


def _number(value: Any) -> str:
  if isinstance(value, float) and not value.is_integer():
    return f'{value:.1f}'
  return str(int(value)) if isinstance(value, float) else str(value)


def _notes(rows: Sequence[dict]) -> list[str]:
  """Footnotes: repeat counts, single-repeat stds, divergence rounds."""
  counts = sorted({row.get('repeats') for row in rows if row.get('repeats') is not None})
  notes = []
  if len(counts) == 1:
    notes.append(f'Mean ± std over {counts[0]} repeat(s) (each with its own partition) of '
                 'the mean query accuracy over target tasks after one-step fast adaptation; '
                 "'Std across targets': the std over one repeat's target tasks, averaged "
                 'over repeats.')
  elif counts:
    notes.append('Repeats: ' + ', '.join(
        f"{display_name(row['method'])} {row.get('repeats')}" for row in rows) + '.')
  if any(row.get('accuracy_std_over') == 'targets' and not row.get('diverged') for row in rows):
    notes.append('† single repeat: std across target tasks.')
  for row in rows:
    if row.get('diverged'):
      when = f" at round {row['diverged_round']}" if row.get('diverged_round') is not None else ''
      stage = f" ({row['diverged_stage']})" if row.get('diverged_stage') else ''
      notes.append(f"{display_name(row['method'])} diverged{when}{stage}; its numbers are "
                   'withheld.')
    elif row.get('not_run'):
      notes.append(f"{display_name(row['method'])} was not run: {row['not_run']}.")
  return notes


def _run_lines(extra: dict | None) -> list[str]:
  """Bullet lines for the scalar top-level entries of `extra` (e.g. config name, seed)."""
  scalars = (str, int, float, bool)
  return [f'- {key}: {value}' for key, value in (extra or {}).items()
          if isinstance(value, scalars)]


def results_markdown(rows: Sequence[dict], partition: dict | None,
                     extra: dict | None = None) -> str:
  """``results.md``: run facts, partition summary and the paper's Tables 1 and 2."""
  notes = _notes(rows)
  sections = ['# Results', '']
  run = _run_lines(extra)
  if run:
    sections += ['## Run', '', *run, '']
  sections += ['## Federated partition', '', *partition_lines(partition), '']
  sections += ['## Accuracy and training cost (cf. MetaGater paper, Table 1)', '',
               markdown_table(rows, TABLE1), '']
  sections += ['## Sparsity and adaptation cost (cf. MetaGater paper, Table 2)', '',
               markdown_table(rows, TABLE2), '',
               'Channel sparsity: fraction of gated channels off on target query inputs '
               '(MetaGater) or of filters pruned (MetaSNIP (filters)); weight sparsity: '
               'fraction of weights pruned (MetaSNIP, unstructured); mean ± std across '
               "one repeat's target tasks (sparsity diversity), averaged over repeats. MACs "
               'relative to the dense network (for unstructured MetaSNIP only with sparse '
               'kernels that skip zeros: dense hardware saves nothing). Adaptation time per '
               'target (compiled).', '']
  if any(row.get('seconds_per_round') is not None for row in rows):
    sections += ['## Speed', '', markdown_table(rows, SPEED), '',
                 'Median seconds per round after the first (compiled) round; images per '
                 'second = images read by the local steps of one round / seconds per '
                 'round; compile: first round minus the median.', '']
  if notes:
    sections += ['## Notes', '', *(f'- {note}' for note in notes), '']
  return '\n'.join(sections)
