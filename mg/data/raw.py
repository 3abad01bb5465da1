"""Readers of the official raw dataset files in a local folder (``data.dir``).

- MNIST: the IDX files of LeCun et al. (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``), gzipped (``.gz``) or not. The IDX header is a
  magic number (two zero bytes, the element type 0x08 = unsigned byte, the
  number of dimensions) and one big-endian int32 per dimension.
- CIFAR-10 / CIFAR-100: the "python version" pickles of Krizhevsky
  (``cifar-10-batches-py/data_batch_1..5, test_batch``;
  ``cifar-100-python/train, test``); each holds ``b'data'`` (N, 3072) uint8 in
  CHW order and ``b'labels'`` (CIFAR-100: ``b'fine_labels'``). ``data.dir`` may
  name the parent folder or the batches folder itself.

Each reader returns raw pixels (N, H, W, C) uint8, labels (N,) int64 and the
splits it read. Every problem with the folder raises :class:`DataError`.
"""

from __future__ import annotations

import gzip
import pickle
import zlib
from pathlib import Path

import numpy as np

from mg.data.errors import DataError

Arrays = tuple[np.ndarray, np.ndarray, tuple[str, ...]]

MNIST_FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}

# name -> (batches folder, {split: files}, label key)
CIFAR_FILES = {
    'cifar10': ('cifar-10-batches-py',
                {'train': tuple(f'data_batch_{i}' for i in range(1, 6)),
                 'test': ('test_batch',)},
                b'labels'),
    'cifar100': ('cifar-100-python', {'train': ('train',), 'test': ('test',)},
                 b'fine_labels'),
}

_IDX_UBYTE = 0x08
_CIFAR_SIDE = 32


def _splits_wanted(split: str) -> tuple[str, ...]:
  return ('train', 'test') if split == 'all' else (split,)


# ---------------------------------------------------------------- MNIST (IDX)


def _idx_path(folder: Path, stem: str) -> Path | None:
  """``stem.gz`` or ``stem`` in ``folder``, whichever exists (gz first)."""
  for candidate in (folder / f'{stem}.gz', folder / stem):
    if candidate.is_file():
      return candidate
  return None


def read_idx(path: Path, ndim: int) -> np.ndarray:
  """An unsigned-byte IDX array with ``ndim`` dimensions, header checked."""
  opener = gzip.open if path.suffix == '.gz' else open
  try:
    with opener(path, 'rb') as f:
      blob = f.read()
  except zlib.error as err:  # a damaged deflate stream inside a .gz
    raise DataError(f'{path} is damaged: its compressed data does not decompress '
                    f'({err}); replace it with the official file.') from err
  except (OSError, EOFError) as err:
    raise DataError(f'{path} could not be read ({err}); replace it with the '
                    'official file.') from err
  if len(blob) < 4 + 4 * ndim:
    raise DataError(f'{path} is too short to be an IDX file; replace it with '
                    'the official file.')
  if blob[0] != 0 or blob[1] != 0 or blob[2] != _IDX_UBYTE or blob[3] != ndim:
    raise DataError(
        f'{path} is not an unsigned-byte IDX file with {ndim} dimension(s) '
        f'(magic number {blob[:4].hex()}, expected 0000{_IDX_UBYTE:02x}'
        f'{ndim:02x}); the folder holds the wrong files.')
  shape = tuple(int(d) for d in np.frombuffer(blob, '>i4', ndim, offset=4))
  header = 4 + 4 * ndim
  expected = header + int(np.prod(shape))
  if len(blob) != expected:
    raise DataError(f'{path} has {len(blob)} bytes but its header {shape} '
                    f'implies {expected}; the file is truncated or corrupt, '
                    'replace it with the official file.')
  return np.frombuffer(blob, np.uint8, offset=header).reshape(shape)


def _mnist_missing_message(folder: Path, split: str) -> str:
  names = ', '.join(f'{stem}[.gz]' for stem in MNIST_FILES[split])
  return (f'data.dir={str(folder)!r} holds no MNIST {split} split: expected '
          f'{names}. Put the official MNIST IDX files there, or choose '
          "data.split='all' to load whichever splits are present.")


def _mnist_split_files(folder: Path, split: str):
  """(images, labels) paths of ``split``; None if absent; error if half."""
  paths = [_idx_path(folder, stem) for stem in MNIST_FILES[split]]
  if all(p is None for p in paths):
    return None
  missing = [stem for stem, p in zip(MNIST_FILES[split], paths) if p is None]
  if missing:
    raise DataError(_mnist_missing_message(folder, split)
                    + f' (only one of the two files is present: {missing[0]}[.gz] is '
                    'missing)')
  return paths


def _mnist_folder(root: Path) -> Path:
  """``root`` or its ``mnist`` subfolder, whichever holds IDX files."""
  for folder in (root, root / 'mnist'):
    if any(_idx_path(folder, s) for pair in MNIST_FILES.values() for s in pair):
      return folder
  return root


def has_mnist(root: Path, split: str) -> bool:
  """Whether ``root`` holds the MNIST files that ``split`` needs."""
  folder = _mnist_folder(root)
  found = [all(_idx_path(folder, s) for s in MNIST_FILES[name])
           for name in _splits_wanted(split)]
  return any(found) if split == 'all' else all(found)


def read_mnist(root: Path, split: str) -> Arrays:
  """MNIST from IDX files; ``split='all'`` reads whichever splits exist."""
  folder = _mnist_folder(root)
  pixels, labels, loaded = [], [], []
  for name in _splits_wanted(split):
    paths = _mnist_split_files(folder, name)
    if paths is None:
      if split != 'all':
        raise DataError(_mnist_missing_message(folder, name))
      continue
    images = read_idx(paths[0], ndim=3)
    targets = read_idx(paths[1], ndim=1)
    if images.shape[1:] != (28, 28):
      raise DataError(f'{paths[0]} holds {images.shape[1:]} images, not MNIST '
                      '28x28; the folder holds the wrong files.')
    if len(images) != len(targets):
      raise DataError(f'{paths[0]} has {len(images)} images but {paths[1]} '
                      f'has {len(targets)} labels; use a matching pair of '
                      'official files.')
    pixels.append(images[..., None])
    labels.append(targets.astype(np.int64))
    loaded.append(name)
  if not loaded:
    raise DataError(
        f'data.dir={str(folder)!r} holds no MNIST IDX files: expected '
        't10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] '
        '(test) and/or train-images-idx3-ubyte[.gz] and '
        'train-labels-idx1-ubyte[.gz] (train).')
  return _concat(pixels, labels, tuple(loaded))


# ------------------------------------------------------------ CIFAR (pickles)


class _ArrayUnpickler(pickle.Unpickler):
  """Unpickles only what the CIFAR files hold: dicts, lists, numpy arrays."""

  _ALLOWED = {
      ('numpy', 'ndarray'), ('numpy', 'dtype'),
      ('numpy.core.multiarray', '_reconstruct'),
      ('numpy._core.multiarray', '_reconstruct'),
      ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
      ('numpy.core.numeric', '_frombuffer'),
      ('numpy._core.numeric', '_frombuffer'),
      ('_codecs', 'encode'),
  }

  def find_class(self, module, name):
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(f'unexpected object {module}.{name}')
    return super().find_class(module, name)


def _read_pickle(path: Path) -> dict:
  try:
    with open(path, 'rb') as f:
      batch = _ArrayUnpickler(f, encoding='bytes').load()
  except (OSError, EOFError, pickle.UnpicklingError, ValueError,
          TypeError) as err:
    raise DataError(f'{path} is not a CIFAR python batch ({err}); replace it '
                    'with the official file.') from err
  if not isinstance(batch, dict):
    raise DataError(f'{path} is not a CIFAR python batch (no dict inside); '
                    'replace it with the official file.')
  return batch


def _cifar_folder(root: Path, name: str) -> Path:
  """The batches folder: ``root/<official folder name>`` or ``root`` itself."""
  sub = root / CIFAR_FILES[name][0]
  return sub if sub.is_dir() else root


def has_cifar(root: Path, name: str, split: str) -> bool:
  """Whether ``root`` holds the CIFAR files that ``split`` needs."""
  folder = _cifar_folder(root, name)
  files = CIFAR_FILES[name][1]
  found = [all((folder / f).is_file() for f in files[s])
           for s in _splits_wanted(split)]
  return any(found) if split == 'all' else all(found)


def _cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
  batch = _read_pickle(path)
  if b'data' not in batch or label_key not in batch:
    raise DataError(
        f'{path} lacks {b"data"!r} or {label_key!r}: it is not a batch of '
        'this dataset (CIFAR-10 uses b"labels", CIFAR-100 b"fine_labels"); '
        'check data.name and data.dir.')
  data = np.asarray(batch[b'data'])
  labels = np.asarray(batch[label_key], np.int64)
  side = _CIFAR_SIDE
  if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * side**2:
    raise DataError(f'{path} holds data of shape {data.shape} {data.dtype}, '
                    f'not (N, {3 * side**2}) uint8; replace it with the '
                    'official file.')
  if labels.shape != (len(data),):
    raise DataError(f'{path} has {len(data)} images but {labels.size} labels; '
                    'replace it with the official file.')
  # Rows are CHW (1024 red, 1024 green, 1024 blue); the models want HWC.
  pixels = data.reshape(-1, 3, side, side).transpose(0, 2, 3, 1)
  return pixels, labels


def read_cifar(root: Path, name: str, split: str) -> Arrays:
  """CIFAR-10/100 python batches; ``split='all'`` reads whichever exist."""
  folder = _cifar_folder(root, name)
  official, files, label_key = CIFAR_FILES[name]
  pixels, labels, loaded = [], [], []
  for part in _splits_wanted(split):
    present = [(folder / f).is_file() for f in files[part]]
    if not any(present) and split == 'all':
      continue
    if not all(present):
      missing = [f for f, ok in zip(files[part], present) if not ok]
      raise DataError(
          f'{str(folder)!r} lacks the {name} {part} file(s) {missing}. Set '
          f'data.dir to the folder holding {official}/ (or to {official}/ '
          'itself), extracted from the official "python version" archive.')
    for f in files[part]:
      images, targets = _cifar_batch(folder / f, label_key)
      pixels.append(images)
      labels.append(targets)
    loaded.append(part)
  if not loaded:
    raise DataError(
        f'{str(folder)!r} holds no {name} files: expected {official}/ with '
        f'{", ".join(files["train"] + files["test"])}. Set data.dir to the '
        'folder of the extracted official "python version" archive.')
  return _concat(pixels, labels, tuple(loaded))


def _concat(pixels, labels, loaded) -> Arrays:
  if len(pixels) == 1:
    return np.ascontiguousarray(pixels[0]), labels[0], loaded
  return np.concatenate(pixels), np.concatenate(labels), loaded


def read_raw(root: Path, name: str, split: str) -> Arrays:
  """Official files of ``name`` under ``root`` (MNIST IDX or CIFAR pickles)."""
  if not root.is_dir():
    raise DataError(f'data.dir={str(root)!r} is not a folder; point it at the '
                    f'folder holding the official {name} files.')
  if name == 'mnist':
    return read_mnist(root, split)
  return read_cifar(root, name, split)


def has_any_raw(root: Path, name: str) -> bool:
  """Whether ``root`` holds any official file of ``name`` (even an incomplete set)."""
  if not root.is_dir():
    return False
  if name == 'mnist':
    folder = _mnist_folder(root)
    return any(_idx_path(folder, s) for pair in MNIST_FILES.values() for s in pair)
  folder = _cifar_folder(root, name)
  return any((folder / f).is_file() for files in CIFAR_FILES[name][1].values()
             for f in files)


def has_raw(root: Path, name: str, split: str) -> bool:
  """Whether ``root`` holds official files of ``name`` for ``split``."""
  if not root.is_dir():
    return False
  if name == 'mnist':
    return has_mnist(root, split)
  return has_cifar(root, name, split)
