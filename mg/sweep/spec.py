r"""Sweep files: which hyperparameters and seeds a batched sweep trains.

A sweep file is a Python file with ``get_sweep()`` (or ``get_sweep(variant)``,
chosen as ``--sweep=file.py:variant``) returning one *study* or a list of
studies. A study names its method(s) and either a grid or explicit members::

  def get_sweep():
    return [
        {'method': 'metagater',                       # or a list of methods
         'grid': {'meta.beta': [0.5, 1.0, 2.0],       # every combination ...
                  'meta.rho': [0.0, 0.01]},
         'seeds': [0, 1]},                            # ... at every seed
        {'method': 'fedavg',
         'members': [{'meta.local_lr': 0.02},         # an explicit list;
                     {'meta.local_lr': 0.1, 'seed': 3}]},
    ]

Keys of a study: ``method`` (a name or a list of names), exactly one of
``grid`` (field -> non-empty list of numbers; ``seed`` may be a grid field) or
``members`` (a non-empty list of {field: number}, each may set ``seed``), and
optionally ``seeds`` (a non-empty list of ints; default: the config's
``seed``). Fields not set by a member keep the config's value, so any other
setting is changed for the whole sweep with ``--config.<field>=value``.

A member with seed ``S`` is the single run ``python -m experiments.main
--config=... --config.seed=S --config.<field>=<value> ...`` (its first repeat):
the seed fixes its data partition and its PRNG streams. Repeats are seeds:
``config.repeats`` is not used by a sweep.

Only the numeric hyperparameters that a compiled round and a compiled
adaptation read as traced arrays may vary (``mg.metagater.sweep.family``): they live in
``ServerState.hparams`` (the role ``optax.inject_hyperparams`` plays for an
optax optimizer: hyperparameters as state, not as constants of the program),
and the adaptation step size is an argument of the adaptation. Each method's
own fields are ``per_method.<method>.<name>`` (``mg.metagater.methods.settings``); the
shared field each defaults to may be swept too while the per-method one is
unset. A swept field must reach its method: a field the method does not read
(e.g. ``perfedavg.alpha`` for Per-FedAvg HF, which reads ``alpha_hf``), or a
shared field that the config overrides for that method, is refused. Anything
that changes a shape or the program (rounds, model, batch size, regularizer)
is fixed for the whole sweep. Every mistake raises ``SweepError`` with one
line naming the study, the field and what is allowed.

Configurations are ranked on the validation tasks (``data.num_validation``),
never on the targets: a sweep needs at least one validation task.

What a field means is a system's :class:`Family` (``members(..., family=...)``):
MetaGater's (``mg.metagater.sweep.family``) ranks on validation tasks, ReeFL's
(``mg.reefl.sweep``) on validation clients; each names every method's
``per_method`` fields and the shared fields they default to.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import numbers
import os
from typing import Callable, NamedTuple

from mg.errors import ConfigError


SEED = 'seed'
_STUDY_KEYS = ('method', 'grid', 'members', 'seeds')


class SweepError(ValueError):
  """A sweep file that cannot run; the message names the study and field."""


def sweepable_fields(shared: dict) -> dict:
  """``{method: fields}``: each method's own ``per_method`` fields, then the shared ones."""
  return {method: tuple(f'per_method.{method}.{key}' for key in keys) + tuple(keys.values())
          for method, keys in shared.items()}


class Family(NamedTuple):
  """What a sweep file's fields mean for one family of methods.

  Attributes:
    shared: ``{method: {key: shared field}}``: each method's settings
      (``per_method.<method>.<key>``) and the shared field each defaults to;
      a member may set exactly these fields.
    settings: ``settings(method, config) -> dict``: what ``method`` runs with.
    validate: ``validate(config)``: raises ``ConfigError`` for a member's config.
    cannot_sweep: ``cannot_sweep(config) -> str | None``: why ``config`` cannot
      rank its members (no validation data), or None.
    refused: ``{method: why}``: methods with nothing of their own to sweep.
    check_field: ``check_field(field, config) -> str | None``: a family rule
      refusing a field under ``config``, or None.
  """
  shared: dict
  settings: Callable
  validate: Callable
  cannot_sweep: Callable
  refused: dict = {}
  check_field: Callable = lambda field, config: None

  @property
  def fields(self) -> dict:
    return sweepable_fields(self.shared)


class Member(NamedTuple):
  """One configuration of a sweep.

  Attributes:
    method: the method's name (``mg.metagater.methods.METHODS``).
    values: ``{field: float}`` the member sets (other fields: the config's).
    seed: the run's seed: its data partition and its PRNG streams.
  """
  method: str
  values: dict
  seed: int

  def describe(self) -> str:
    settings = ', '.join(f'{k}={v:g}' for k, v in self.values.items())
    return f"{self.method}({settings}{', ' if settings else ''}seed={self.seed})"


def load(path: str):
  """The object ``get_sweep()`` of the file ``path`` (``file.py[:variant]``) returns."""
  filename, _, variant = path.partition(':')
  if not os.path.isfile(filename):
    raise SweepError(f'sweep file {filename!r} does not exist')
  module_spec = importlib.util.spec_from_file_location('_mg_sweep_file', filename)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except
    raise SweepError(f'sweep file {filename}: cannot be loaded: '
                     f'{type(e).__name__}: {e}') from e
  if not callable(getattr(module, 'get_sweep', None)):
    raise SweepError(f'sweep file {filename} defines no get_sweep() function')
  try:
    return module.get_sweep(variant) if variant else module.get_sweep()
  except SweepError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise SweepError(f'sweep file {path}: get_sweep() failed: '
                     f'{type(e).__name__}: {e}') from e


def members(sweep, config, family: Family) -> tuple[Member, ...]:
  """Every member of ``sweep`` (what ``get_sweep`` returns), checked.

  Args:
    sweep: a study dict or a non-empty list of them (module docstring).
    config: the base experiment config (default seed, and every member's
      config is validated with ``family.validate``).
    family: what the fields mean (default: MetaGater's methods).

  Returns:
    The members in order: study by study, method by method, grid point by
    grid point (first field slowest), seed by seed.

  Raises:
    SweepError: the first problem found, in one line.
  """
  why = family.cannot_sweep(config)
  if why:
    raise SweepError(why)
  studies = [sweep] if isinstance(sweep, dict) else sweep
  if not isinstance(studies, (list, tuple)) or not studies:
    raise SweepError('get_sweep() must return a study dict or a non-empty list of '
                     f'them, not {sweep!r}')
  out = []
  for index, study in enumerate(studies):
    where = f'study {index}' if len(studies) > 1 else 'sweep'
    if not isinstance(study, dict):
      raise SweepError(f'{where}: expected a dict with keys {_STUDY_KEYS}, not {study!r}')
    out.extend(_study_members(study, config, where, family))
  for member in out:
    _check_member_config(member, config, family)
  return tuple(out)


def member_config(config, member: Member):
  """A copy of ``config`` with the member's seed and values (the single run's config)."""
  new = config.copy_and_resolve_references()
  new.seed = member.seed
  new.methods = (member.method,)
  for field, value in member.values.items():
    _set(new, field, value)
  return new


def _set(config, field: str, value) -> None:
  *parents, name = field.split('.')
  node = config
  for part in parents:
    node = node[part]
  node[name] = value


def _get(config, field: str):
  node = config
  for part in field.split('.'):
    node = node[part]
  return node


def swept_fields(all_members, config) -> tuple[str, ...]:
  """The fields (seed included) that take more than one value, in first-seen order.

  A field a member does not set takes the config's value.
  """
  fields = list(dict.fromkeys(f for m in all_members for f in m.values))
  seen = {f: set() for f in fields + [SEED]}
  for m in all_members:
    for f in fields:
      seen[f].add(m.values.get(f, config_value(config, f)))
    seen[SEED].add(m.seed)
  return tuple(f for f, values in seen.items() if len(values) > 1)


def config_value(config, field: str):
  """The number at ``field`` (a dotted path) of ``config``, or None if unset."""
  value = _get(config, field)
  return None if value is None else float(value)


def _study_members(study, config, where, family):
  unknown = sorted(set(study) - set(_STUDY_KEYS))
  if unknown:
    raise SweepError(f'{where}: unknown key {unknown[0]!r}; a study has the keys '
                     f'{", ".join(_STUDY_KEYS)}')
  methods = _methods(study.get('method'), where, family)
  if ('grid' in study) == ('members' in study):
    raise SweepError(f"{where}: give exactly one of 'grid' (field -> list of values) "
                     "or 'members' (a list of {field: value})")
  seeds = None
  if 'seeds' in study:
    seeds = study['seeds']
    if not isinstance(seeds, (list, tuple)) or not seeds:
      raise SweepError(f"{where}: 'seeds' must be a non-empty list of ints, not {seeds!r}")
    seeds = [_seed(s, f"{where}: seeds") for s in seeds]

  if 'grid' in study:
    grid = study['grid']
    if not isinstance(grid, dict) or not grid:
      raise SweepError(f"{where}: the grid is empty: give at least one field and its "
                       "values, e.g. {'meta.beta': [0.5, 1.0]}")
    points = []
    for field, values in grid.items():
      if not isinstance(values, (list, tuple)) or not values:
        raise SweepError(f'{where}: grid field {field!r} has no values: give a '
                         f'non-empty list, not {values!r}')
    if SEED in grid and seeds is not None:
      raise SweepError(f"{where}: seeds are given twice ('seeds' and grid field 'seed')")
    for combo in itertools.product(*grid.values()):
      points.append(dict(zip(grid.keys(), combo)))
  else:
    points = study['members']
    if not isinstance(points, (list, tuple)) or not points:
      raise SweepError(f"{where}: 'members' must be a non-empty list of "
                       "{field: value} dicts")
    for point in points:
      if not isinstance(point, dict):
        raise SweepError(f"{where}: each member is a dict {{field: value}}, not {point!r}")

  out = []
  for method in methods:
    for point in points:
      values = {}
      for field, value in point.items():
        if field == SEED:
          continue
        why = family.check_field(field, config)
        if why:
          raise SweepError(f'{where}: {why}')
        _check_field(field, method, config, where, family)
        values[field] = _number(value, f'{where}: {field}')
      if SEED in point:
        if seeds is not None and 'members' in study:
          raise SweepError(f"{where}: seeds are given twice ('seeds' and a member's 'seed')")
        member_seeds = [_seed(point[SEED], f'{where}: seed')]
      else:
        member_seeds = seeds if seeds is not None else [config.seed]
      out.extend(Member(method, values, s) for s in member_seeds)
  return out


def _methods(value, where, family):
  names = [value] if isinstance(value, str) else value
  if not isinstance(names, (list, tuple)) or not names:
    raise SweepError(f"{where}: 'method' must name a method or a non-empty list of "
                     f'them; sweepable methods: {", ".join(family.shared)}')
  for name in names:
    if name in family.refused:
      raise SweepError(f'{where}: {family.refused[name]}')
    if name not in family.shared:
      raise SweepError(f'{where}: unknown method {name!r}; sweepable methods: '
                       f'{", ".join(family.shared)}')
  return list(names)


def _check_field(field, method, config, where, family):
  fields = family.fields
  allowed = fields[method]
  listing = f'{", ".join(allowed)} (and {SEED})'
  if field in allowed:
    _check_reaches(field, method, config, where, family)
    return
  try:
    _get(config, field)
    exists = True
  except (KeyError, AttributeError, TypeError):
    exists = False
  if not exists:
    raise SweepError(f'{where}: unknown field {field!r} for {method}; fields that can '
                     f'vary: {listing}')
  if any(field in own for own in fields.values()):
    raise SweepError(
        f'{where}: field {field!r} cannot vary in a sweep of {method}: it does not '
        f'reach {method} (the method never reads it); fields that can vary: {listing}')
  raise SweepError(
      f'{where}: field {field!r} cannot vary in a sweep of {method}: it is not a '
      f'traced hyperparameter (set it for the whole sweep with --config.{field}=...); '
      f'fields that can vary: {listing}')


def _check_reaches(field, method, config, where, family):
  """Refuses ``field`` if two values of it give ``method`` the same settings."""
  runs = []
  for value in (1.0, 2.0):
    trial = config.copy_and_resolve_references()
    _set(trial, field, value)
    runs.append(family.settings(method, trial))
  if runs[0] != runs[1]:
    return
  key = field.rsplit('.', 1)[-1]
  own = f'per_method.{method}.{key}'
  if own != field and key in family.shared[method] and _get(config, own) is not None:
    why = (f'the config sets {own}={_get(config, own)!r}, which overrides it for '
           f'{method}; sweep {own} instead')
  else:
    why = f'{method} runs with the same settings whatever its value'
  raise SweepError(f'{where}: field {field!r} does not reach {method}: {why}')


def _number(value, what) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise SweepError(f'{what}: value {value!r} is not a number (traced fields take '
                     'ints or floats)')
  if not math.isfinite(float(value)):
    raise SweepError(f'{what}: value {value!r} is not finite')
  return float(value)


def _seed(value, what) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
    raise SweepError(f'{what}: {value!r} is not a seed (an int >= 0)')
  return int(value)


def _check_member_config(member, config, family):
  try:
    family.validate(member_config(config, member))
  except ConfigError as e:
    raise SweepError(f'member {member.describe()}: {e}') from e
