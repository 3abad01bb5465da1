"""Where the images come from: tensorflow-datasets, official raw files, digits.

``load(config.data)`` picks the source, reads raw pixels and labels, checks them
against the dataset's :class:`~mg.data.specs.DatasetSpec` and normalises them
(docs/design.md s.6 and "Data"):

- ``'digits'``: the UCI handwritten digits shipped with scikit-learn (1,797 8x8
  images, no train/test split).
- ``'raw'``: the official files in ``data.dir`` (see :mod:`mg.data.raw`).
- ``'tfds'``: a prepared tensorflow-datasets copy (``data.dir`` is its
  ``data_dir``), read through ``tfds.data_source`` (random access, no
  TensorFlow). Nothing is ever downloaded: a copy that is not prepared is a
  :class:`DataError` that says how to prepare one.
- ``'auto'``: digits for ``name='digits'``; else the raw files if ``data.dir``
  holds any of them (an incomplete set is an error naming the missing file),
  else tensorflow-datasets.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from mg.data import raw
from mg.data.config import validate
from mg.data.errors import DataError
from mg.data.specs import SPECS, DatasetSpec, normalise

_TFDS_CHUNK = 4096  # records per batched read


class Dataset(NamedTuple):
  """A whole labelled dataset, normalised, before the federated partition.

  Attributes:
    images: (N, H, W, C) float32, ``(pixel / pixel_max - mean) / std``.
    labels: (N,) int32 global class ids in ``[0, num_classes)``.
    num_classes: number of classes of the dataset (the model's outputs).
    name: 'digits' | 'mnist' | 'cifar10' | 'cifar100'.
    source: the source actually read: 'digits' | 'raw' | 'tfds'.
    splits: the splits actually read, e.g. ('test',) or ('train', 'test').
  """
  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  name: str
  source: str = ''
  splits: tuple[str, ...] = ()


# ------------------------------------------------------------------- digits


def read_digits() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """scikit-learn's 8x8 digits: pixels 0..16 as (1797, 8, 8, 1) float32."""
  # Imported here: scikit-learn is slow to import and only digits needs it.
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  pixels = digits.images.astype(np.float32)[..., None]
  return pixels, digits.target.astype(np.int64), ('all',)


# --------------------------------------------------------- tensorflow-datasets


def _not_prepared(name: str, split: str, data_dir: str | None,
                  err: Exception) -> DataError:
  where = (repr(data_dir) if data_dir else
           'the default tfds data_dir (~/tensorflow_datasets or '
           '$TFDS_DATA_DIR)')
  return DataError(
      f'tensorflow-datasets has no prepared copy of {name!r} (split {split!r}) '
      f'in {where}, and this run never downloads. Either prepare it on a '
      f'machine with internet access (`tfds build {name} '
      '--file_format=array_record`, or `python -c "import '
      f"tensorflow_datasets as tfds; tfds.data_source('{name}')\"`) and copy "
      'the tensorflow_datasets folder here, setting --config.data.dir to it; '
      'or use the official files: --config.data.source=raw '
      f'--config.data.dir=FOLDER. (tfds: {type(err).__name__}: '
      f'{str(err).splitlines()[0] if str(err) else ""})')


def _records(source: Sequence) -> Iterator[dict]:
  """All records, read in batches when the source supports ``__getitems__``."""
  batch_read = getattr(source, '__getitems__', None)
  for start in range(0, len(source), _TFDS_CHUNK):
    keys = list(range(start, min(len(source), start + _TFDS_CHUNK)))
    yield from (batch_read(keys) if batch_read else (source[k] for k in keys))


def _read_tfds_split(name: str, split: str, data_dir: str | None,
                     spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as err:
    raise DataError(
        'tensorflow-datasets is not installed; install it or use '
        '--config.data.source=raw with the official files.') from err
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir,
                              download=False)
    n = len(source)
  except (KeyError, ValueError, OSError, RuntimeError, AssertionError) as err:
    raise _not_prepared(name, split, data_dir, err) from err
  pixels = np.empty((n, *spec.input_shape), np.uint8)
  labels = np.empty((n,), np.int64)
  for i, record in enumerate(_records(source)):
    image = np.asarray(record['image'])
    if image.shape != spec.input_shape:
      raise DataError(
          f'tensorflow-datasets {name!r} record {i} has an image of shape '
          f'{image.shape}, not {spec.input_shape}; the prepared copy in '
          f'{data_dir or "the default data_dir"} is not {name}.')
    pixels[i] = image
    labels[i] = record['label']
  return pixels, labels


def read_tfds(name: str, split: str, data_dir: str | None):
  """Pixels, labels, splits read by ``tfds.data_source``; never downloads."""
  spec = SPECS[name]
  parts = ('train', 'test') if split == 'all' else (split,)
  read = [_read_tfds_split(name, part, data_dir, spec) for part in parts]
  if len(read) == 1:
    return read[0][0], read[0][1], parts
  return (np.concatenate([r[0] for r in read]),
          np.concatenate([r[1] for r in read]), parts)


# ------------------------------------------------------------------- dispatch


def _read(cfg) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], str]:
  """Raw pixels, labels, splits read and the source used."""
  name, split, source = cfg['name'], cfg['split'], cfg['source']
  folder = Path(cfg['dir']).expanduser() if cfg['dir'] else None
  data_dir = str(folder) if folder else None
  if name == 'digits':
    return (*read_digits(), 'digits')
  if source == 'raw':
    return (*raw.read_raw(folder, name, split), 'raw')
  if source == 'tfds':
    return (*read_tfds(name, split, data_dir), 'tfds')
  # auto
  if folder is not None and not folder.is_dir():
    raise DataError(
        f'data.dir={cfg["dir"]!r} is not a folder; point it at the official '
        f'{name} files or at a tensorflow_datasets folder.')
  if folder is not None and (raw.has_raw(folder, name, split)
                             or raw.has_any_raw(folder, name)):
    # An incomplete set of official files: the raw reader names what is missing.
    return (*raw.read_raw(folder, name, split), 'raw')
  try:
    return (*read_tfds(name, split, data_dir), 'tfds')
  except DataError as err:
    if folder is None:
      raise
    raise DataError(
        f'data.dir={cfg["dir"]!r} holds neither the official {name} files '
        f'for split {split!r} nor a prepared tensorflow-datasets copy. '
        f'{err}') from err


def _check(pixels: np.ndarray, labels: np.ndarray, spec: DatasetSpec,
           where: str) -> None:
  if pixels.shape[1:] != spec.input_shape:
    raise DataError(f'{where} gave images of shape {pixels.shape[1:]}, but '
                    f'{spec.name} images are {spec.input_shape}; check '
                    'data.name and data.dir.')
  if len(labels) and (labels.min() < 0 or labels.max() >= spec.num_classes):
    raise DataError(
        f'{where} gave labels in [{labels.min()}, {labels.max()}], outside '
        f'the {spec.num_classes} classes of {spec.name}; check data.name '
        'and data.dir.')


def load(cfg) -> Dataset:
  """The dataset named by ``config.data``, normalised (docs/design.md s.6 and "Data").

  Args:
    cfg: the ``config.data`` ConfigDict; all its fields are checked first.

  Returns:
    A :class:`Dataset` with the splits read; ``split='all'`` reads train and
    test (for raw files, whichever are present; ``Dataset.splits`` says which).

  Raises:
    DataError: a bad field, a missing or wrong folder, a dataset not prepared.
  """
  validate(cfg)
  spec = SPECS[cfg['name']]
  pixels, labels, splits, source = _read(cfg)
  _check(pixels, labels, spec, f'source {source!r}')
  return Dataset(images=normalise(pixels, spec),
                 labels=labels.astype(np.int32),
                 num_classes=spec.num_classes, name=spec.name,
                 source=source, splits=tuple(splits))
