"""A workdir's config of record, and what a new command may change of it.

The record is the run's config as JSON with the kind of work it is (``kind``:
``'run'`` or ``'sweep'``); it is written to ``config.json`` once the work is
accepted and inside every checkpoint. A later command in the workdir is
compared with it field by field: fields that change how the work is carried
out, not what it computes (``RESUMABLE_FIELDS``), may differ; any other
difference, or another kind of work, is refused with a message naming each
field.
"""

from __future__ import annotations

import json

from mg.errors import ConfigError

KIND_FIELD = 'kind'
KINDS = ('run', 'sweep')
# Fields that change how a run is carried out, not what it computes: a run may
# be resumed with other values of these.
RESUMABLE_FIELDS = ('resume', 'progress', 'checkpoint_every', 'keep_checkpoints',
                    'compile_cache_dir')


def of(config, kind: str) -> dict:
  """The record of ``config`` doing ``kind`` of work (plain JSON values)."""
  if kind not in KINDS:
    raise ValueError(f'kind={kind!r}: expected one of {KINDS}')
  return dict(json.loads(config.to_json_best_effort()), **{KIND_FIELD: kind})


def text(record: dict) -> str:
  """``config.json``'s text: one writer, one format."""
  return json.dumps(record, indent=2, sort_keys=True) + '\n'


def _flatten(tree, prefix=''):
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f'{prefix}{k}.'))
    return out
  return {prefix[:-1]: tree}


def differences(saved: dict, new: dict) -> list:
  """``['field: saved -> new', ...]`` between two records, resumable fields aside.

  A record of another kind is one difference, named first. Tuples and lists
  compare equal (JSON has only lists).
  """
  out = []
  saved_kind, new_kind = saved.get(KIND_FIELD), new.get(KIND_FIELD)
  if saved_kind != new_kind:
    out.append(f'it holds a {saved_kind or "run of an older layout"}, not a {new_kind}')
  saved, new = _flatten(saved), _flatten(new)
  for field in sorted(set(saved) | set(new)):
    if field in RESUMABLE_FIELDS or field == KIND_FIELD:
      continue
    a, b = saved.get(field, '<absent>'), new.get(field, '<absent>')
    if a != b:
      out.append(f'{field}: {a!r} -> {b!r}')
  return out


def check_same(workdir: str, saved: dict, new: dict) -> None:
  """Raises ``ConfigError`` naming every field where ``new`` differs from ``saved``."""
  diffs = differences(saved, new)
  if not diffs:
    return
  shown = '; '.join(diffs[:6]) + ('; ...' if len(diffs) > 6 else '')
  kind = saved.get(KIND_FIELD) or 'run'
  raise ConfigError(
      f'workdir {workdir} holds a {kind} of another config ({shown}). To resume it, rerun '
      'its own command; to start over in it, add --config.resume=False (deletes its '
      'checkpoints and results); or give a fresh --workdir')
