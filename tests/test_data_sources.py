"""Loaders of mg.data: raw IDX/CIFAR files, tfds (mocked), digits, bad input."""

import gzip
import pickle
import struct
import time
from pathlib import Path

import numpy as np
import pytest

import mg.data
from data_helpers import data_config
from mg.data import raw

# The real MNIST test set, in ../shared beside the repository.
SHARED_MNIST = (Path(__file__).resolve().parents[1].parent / 'shared' / 'data'
                / 'mnist')


def write_idx(path: Path, array: np.ndarray, *, gz: bool = True,
              magic: bytes | None = None) -> None:
  header = magic or bytes([0, 0, 0x08, array.ndim])
  header += struct.pack(f'>{array.ndim}i', *array.shape)
  opener = gzip.open if gz else open
  with opener(path, 'wb') as f:
    f.write(header + array.astype(np.uint8).tobytes())


def write_mnist(folder: Path, split: str, n: int, *, gz: bool = True, seed=0):
  """A tiny MNIST split in IDX form; returns its pixels and labels."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, (n,), dtype=np.uint8)
  prefix = 'train' if split == 'train' else 't10k'
  suffix = '.gz' if gz else ''
  folder.mkdir(parents=True, exist_ok=True)
  write_idx(folder / f'{prefix}-images-idx3-ubyte{suffix}', images, gz=gz)
  write_idx(folder / f'{prefix}-labels-idx1-ubyte{suffix}', labels, gz=gz)
  return images, labels


def write_cifar_batch(path: Path, n: int, *, label_key=b'labels',
                      num_classes=10, seed=0):
  """A CIFAR python batch (rows CHW, as the official files); returns HWC."""
  rng = np.random.default_rng(seed)
  hwc = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  rows = hwc.transpose(0, 3, 1, 2).reshape(n, 3072)
  labels = rng.integers(0, num_classes, (n,)).tolist()
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'wb') as f:
    pickle.dump({b'batch_label': b'test', b'data': rows, label_key: labels,
                 b'filenames': [b'x.png'] * n}, f, protocol=2)
  return hwc, np.array(labels)


def write_cifar10(root: Path, n: int = 3):
  folder = root / 'cifar-10-batches-py'
  train = [write_cifar_batch(folder / f'data_batch_{i}', n, seed=i)
           for i in range(1, 6)]
  test = write_cifar_batch(folder / 'test_batch', n, seed=9)
  return train, test


# ------------------------------------------------------------------ raw MNIST


@pytest.mark.parametrize('gz', [True, False])
def test_raw_mnist_reads_idx_and_normalises(tmp_path, gz):
  images, labels = write_mnist(tmp_path, 'test', 5, gz=gz)
  ds = mg.data.load(data_config(source='raw', name='mnist', dir=str(tmp_path)))
  assert ds.images.shape == (5, 28, 28, 1) and ds.images.dtype == np.float32
  assert ds.labels.dtype == np.int32 and ds.num_classes == 10
  np.testing.assert_array_equal(ds.labels, labels)
  expected = (images[..., None] / 255.0 - 0.1307) / 0.3081
  np.testing.assert_allclose(ds.images, expected, rtol=1e-5, atol=1e-5)
  assert ds.splits == ('test',) and ds.source == 'raw' and ds.name == 'mnist'


def test_raw_mnist_all_concatenates_train_then_test(tmp_path):
  _, train_labels = write_mnist(tmp_path, 'train', 4, seed=1)
  _, test_labels = write_mnist(tmp_path, 'test', 3, seed=2)
  ds = mg.data.load(data_config(source='raw', name='mnist', dir=str(tmp_path)))
  assert ds.splits == ('train', 'test')
  np.testing.assert_array_equal(ds.labels,
                                np.concatenate([train_labels, test_labels]))
  test_only = mg.data.load(data_config(source='raw', name='mnist',
                                       dir=str(tmp_path), split='test'))
  np.testing.assert_array_equal(test_only.labels, test_labels)


def test_auto_with_an_incomplete_set_says_which_file_is_missing(tmp_path):
  write_mnist(tmp_path, 'test', 3)
  (tmp_path / 't10k-labels-idx1-ubyte.gz').unlink()
  with pytest.raises(mg.data.DataError) as err:
    mg.data.load(data_config(name='mnist', dir=str(tmp_path)))
  assert 't10k-labels-idx1-ubyte[.gz] is missing' in str(err.value)


def test_raw_mnist_train_missing_says_which_files(tmp_path):
  write_mnist(tmp_path, 'test', 3)
  with pytest.raises(mg.data.DataError, match='train-images-idx3-ubyte'):
    mg.data.load(data_config(source='raw', name='mnist', dir=str(tmp_path),
                             split='train'))


@pytest.mark.parametrize('corrupt, message', [
    ('magic', 'magic number'),
    ('truncated', 'truncated or corrupt'),
    ('count', 'labels'),
    ('labels_missing', 'only one of the two files'),
    ('deflate', 'is damaged: its compressed data does not decompress'),  # zlib.error
])
def test_raw_mnist_wrong_files(tmp_path, corrupt, message):
  images, labels = write_mnist(tmp_path, 'test', 4)
  label_path = tmp_path / 't10k-labels-idx1-ubyte.gz'
  if corrupt == 'magic':  # an images file where labels should be
    write_idx(label_path, images)
  elif corrupt == 'truncated':
    write_idx(label_path, labels)
    blob = gzip.open(label_path).read()
    with gzip.open(label_path, 'wb') as f:
      f.write(blob[:-2])
  elif corrupt == 'count':
    write_idx(label_path, labels[:3])
  elif corrupt == 'deflate':
    write_idx(label_path, labels)
    blob = bytearray(gzip.compress(gzip.open(label_path).read()))  # a 10-byte header
    blob[10] = 0xff  # the first deflate block header: an invalid block type
    label_path.write_bytes(bytes(blob))
  else:
    label_path.unlink()
  with pytest.raises(mg.data.DataError, match=message):
    mg.data.load(data_config(source='raw', name='mnist', dir=str(tmp_path)))


def test_raw_folder_missing_or_empty(tmp_path):
  with pytest.raises(mg.data.DataError, match='is not a folder'):
    mg.data.load(data_config(source='raw', name='mnist',
                             dir=str(tmp_path / 'nowhere')))
  with pytest.raises(mg.data.DataError, match='holds no MNIST IDX files'):
    mg.data.load(data_config(source='raw', name='mnist', dir=str(tmp_path)))
  with pytest.raises(mg.data.DataError, match='holds no cifar10 files'):
    mg.data.load(data_config(source='raw', name='cifar10', dir=str(tmp_path)))


@pytest.mark.skipif(not SHARED_MNIST.is_dir(),
                    reason=f'the real MNIST test set is not at {SHARED_MNIST}')
def test_real_mnist_test_set():
  start = time.perf_counter()
  ds = mg.data.load(data_config(source='raw', name='mnist',
                                dir=str(SHARED_MNIST)))
  seconds = time.perf_counter() - start
  assert ds.images.shape == (10000, 28, 28, 1) and ds.splits == ('test',)
  # Published facts of the MNIST test set: first labels and class counts.
  np.testing.assert_array_equal(ds.labels[:8], [7, 2, 1, 0, 4, 1, 4, 9])
  np.testing.assert_array_equal(
      np.bincount(ds.labels),
      [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
  # Normalised with the training-set constants: close to zero mean, unit std.
  assert abs(float(ds.images.mean())) < 0.05
  assert abs(float(ds.images.std()) - 1.0) < 0.05
  assert seconds < 5.0, seconds


# ------------------------------------------------------------------ raw CIFAR


def test_raw_cifar10_chw_to_hwc_and_both_folder_forms(tmp_path):
  train, test = write_cifar10(tmp_path)
  pixels, labels, splits = raw.read_raw(tmp_path, 'cifar10', 'all')
  assert splits == ('train', 'test') and pixels.shape == (18, 32, 32, 3)
  np.testing.assert_array_equal(pixels[:3], train[0][0])
  np.testing.assert_array_equal(pixels[-3:], test[0])
  np.testing.assert_array_equal(labels[-3:], test[1])
  # data.dir may also be the batches folder itself.
  ds = mg.data.load(data_config(source='raw', name='cifar10', split='test',
                                dir=str(tmp_path / 'cifar-10-batches-py')))
  expected = (test[0] / 255.0 - np.array([0.4914, 0.4822, 0.4465])) / np.array(
      [0.2470, 0.2435, 0.2616])
  np.testing.assert_allclose(ds.images, expected, rtol=1e-5, atol=1e-5)
  assert ds.num_classes == 10 and ds.splits == ('test',)


def test_raw_cifar100_fine_labels(tmp_path):
  folder = tmp_path / 'cifar-100-python'
  _, train_labels = write_cifar_batch(folder / 'train', 4,
                                      label_key=b'fine_labels',
                                      num_classes=100, seed=1)
  _, test_labels = write_cifar_batch(folder / 'test', 2,
                                     label_key=b'fine_labels',
                                     num_classes=100, seed=2)
  ds = mg.data.load(data_config(source='raw', name='cifar100',
                                dir=str(tmp_path), classes_per_task=5,
                                min_samples=5))
  assert ds.num_classes == 100 and ds.images.shape == (6, 32, 32, 3)
  np.testing.assert_array_equal(ds.labels,
                                np.concatenate([train_labels, test_labels]))


def test_raw_cifar_wrong_files(tmp_path):
  folder = tmp_path / 'cifar-10-batches-py'
  write_cifar10(tmp_path)
  (folder / 'data_batch_3').unlink()
  with pytest.raises(mg.data.DataError, match=r"data_batch_3"):
    mg.data.load(data_config(source='raw', name='cifar10', dir=str(tmp_path)))
  # A CIFAR-10 batch read as CIFAR-100 lacks b'fine_labels'.
  write_cifar_batch(tmp_path / 'cifar-100-python' / 'test', 2)
  with pytest.raises(mg.data.DataError, match='fine_labels'):
    mg.data.load(data_config(source='raw', name='cifar100', split='test',
                             dir=str(tmp_path), classes_per_task=5,
                             min_samples=5))
  # Not a pickle at all; and a pickle of something else than arrays.
  (folder / 'test_batch').write_bytes(b'not a pickle')
  with pytest.raises(mg.data.DataError, match='not a CIFAR python batch'):
    mg.data.load(data_config(source='raw', name='cifar10', split='test',
                             dir=str(tmp_path)))
  (folder / 'test_batch').write_bytes(pickle.dumps({b'data': Path('x')}))
  with pytest.raises(mg.data.DataError, match='unexpected object'):
    mg.data.load(data_config(source='raw', name='cifar10', split='test',
                             dir=str(tmp_path)))


# --------------------------------------------------------------------- digits


def test_digits():
  ds = mg.data.load(data_config())
  assert ds.images.shape == (1797, 8, 8, 1) and ds.images.dtype == np.float32
  assert ds.num_classes == 10 and set(np.unique(ds.labels)) == set(range(10))
  assert ds.source == 'digits' and ds.splits == ('all',)
  # The hard-coded constants are the statistics of all 1,797 images.
  assert abs(float(ds.images.mean())) < 1e-3
  assert abs(float(ds.images.std()) - 1.0) < 1e-3


# ----------------------------------------------------------------------- tfds


class KnownRecords:
  """A random-access source with known content, shaped like tfds records."""

  def __init__(self, images, labels):
    self.images, self.labels = images, labels

  def __len__(self):
    return len(self.labels)

  def __getitem__(self, i):
    return {'image': self.images[i], 'label': np.int64(self.labels[i])}

  def __getitems__(self, keys):
    return [self[k] for k in keys]


def test_tfds_data_source_known_records(monkeypatch):
  tfds = pytest.importorskip('tensorflow_datasets')
  rng = np.random.default_rng(0)
  content = {split: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                     rng.integers(0, 10, (n,)))
             for split, n in (('train', 5), ('test', 3))}

  def as_data_source(builder, split, **kwargs):
    del builder, kwargs
    return KnownRecords(*content[split])

  calls = []
  original = tfds.data_source

  def spy(*args, **kwargs):
    calls.append(kwargs)
    return original(*args, **kwargs)

  monkeypatch.setattr(tfds, 'data_source', spy)
  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    ds = mg.data.load(data_config(source='tfds', name='cifar10'))
  assert [c['split'] for c in calls] == ['train', 'test']
  assert all(c['download'] is False for c in calls)
  assert ds.source == 'tfds' and ds.splits == ('train', 'test')
  pixels = np.concatenate([content['train'][0], content['test'][0]])
  expected = (pixels / 255.0 - np.array([0.4914, 0.4822, 0.4465])) / np.array(
      [0.2470, 0.2435, 0.2616])
  np.testing.assert_allclose(ds.images, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(
      ds.labels, np.concatenate([content['train'][1], content['test'][1]]))


@pytest.mark.parametrize('name, shape, classes', [
    ('mnist', (28, 28, 1), 10), ('cifar100', (32, 32, 3), 100)])
def test_tfds_mock_data_generated_records(monkeypatch, name, shape, classes):
  tfds = pytest.importorskip('tensorflow_datasets')
  from tensorflow_datasets.core.data_sources import base
  # tfds 4.9.10's mock_data sets `__getitems__` as a plain attribute of a
  # MagicMock, so it is called without `self` and fails; read one by one.
  monkeypatch.setattr(base.BaseDataSource, '__getitems__',
                      lambda self, keys: [self[k] for k in keys])
  with tfds.testing.mock_data(num_examples=7,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    ds = mg.data.load(data_config(source='tfds', name=name, split='train',
                                  classes_per_task=2, min_samples=2))
  assert ds.images.shape == (7, *shape) and ds.images.dtype == np.float32
  assert ds.labels.min() >= 0 and ds.labels.max() < classes
  assert ds.num_classes == classes and ds.splits == ('train',)


def test_tfds_plain_sequence_without_batch_reads():
  tfds = pytest.importorskip('tensorflow_datasets')
  records = [{'image': np.full((28, 28, 1), i, np.uint8), 'label': i}
             for i in range(4)]
  with tfds.testing.mock_data(as_data_source_fn=lambda *a, **k: records):
    ds = mg.data.load(data_config(source='tfds', name='mnist', split='test'))
  np.testing.assert_array_equal(ds.labels, [0, 1, 2, 3])
  np.testing.assert_allclose(ds.images[:, 0, 0, 0],
                             (np.arange(4) / 255 - 0.1307) / 0.3081, rtol=1e-5)


def test_tfds_not_prepared_never_downloads(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  with pytest.raises(mg.data.DataError) as err:
    mg.data.load(data_config(source='tfds', name='mnist', dir=str(tmp_path)))
  message = str(err.value)
  assert 'no prepared copy' in message and 'tfds build mnist' in message
  assert '--config.data.source=raw' in message and '\n' not in message
  assert not any(tmp_path.iterdir())  # nothing downloaded or written


# ----------------------------------------------------------------------- auto


def test_auto_prefers_raw_files_then_tfds(tmp_path):
  write_mnist(tmp_path, 'test', 3)
  ds = mg.data.load(data_config(name='mnist', dir=str(tmp_path)))
  assert ds.source == 'raw' and ds.splits == ('test',)
  with pytest.raises(mg.data.DataError, match='is not a folder'):
    mg.data.load(data_config(name='mnist', dir=str(tmp_path / 'nowhere')))
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(mg.data.DataError,
                     match='holds neither the official cifar10 files'):
    mg.data.load(data_config(name='cifar10', dir=str(empty)))
