"""Label-skewed clients by Dirichlet (LDA) sampling, validation clients, a global test split.

The partition of docs/design.md s.9.

ReeFL's setup (the public code, royson/reefl ``src/data/fl_dataset.py``, which
copies Flower 0.19's ``create_lda_partitions``): every client gets the same
number of examples (``N // K``, the first ``N mod K`` clients one more); each
client draws a class distribution ``q_k ~ Dir(alpha 1)`` and takes its
examples one at a time, the class drawn from ``q_k`` renormalised over the
classes that still have examples, the example taken without replacement. The
global test split the server evaluates on is either the official test split or
a stratified held-out fraction of the images (where only one split exists).

Validation clients (for tuning; not in the code, which tunes nothing): of the
``K`` partitioned clients, a seeded random choice of ``V`` never trains; the
server scores the global model on their pooled examples exactly as on the test
split, so settings are chosen without looking at the test split. The partition
itself is the one ``V = 0`` draws, so holding out validation clients only makes
``K - V`` clients train (each client keeps its examples and class mix).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from mg.data import raw
from mg.data import sources
from mg.data.errors import DataError
from mg.data.specs import SPECS, normalise


class ClientSplit(NamedTuple):
  """Indices into the training images, one array per client, and the test images.

  ``clients`` train; ``validation`` (indices into the same images) never train.
  """
  clients: list[np.ndarray]
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  validation: tuple = ()

  def validation_set(self) -> tuple[np.ndarray, np.ndarray]:
    """The validation clients' examples pooled: (images, labels), in index order."""
    index = np.sort(np.concatenate(self.validation)) if self.validation else np.zeros(0, int)
    return self.train_images[index], self.train_labels[index]


def lda_partition(labels: np.ndarray, num_clients: int, alpha: float,
                  rng: np.random.Generator) -> list[np.ndarray]:
  """Indices of each client's examples (equal sizes, Dirichlet class mix)."""
  labels = np.asarray(labels)
  classes = np.unique(labels)
  pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in classes]
  sizes = np.full(num_clients, len(labels) // num_clients)
  sizes[:len(labels) % num_clients] += 1
  mix = rng.dirichlet(np.full(len(classes), float(alpha)), size=num_clients)
  empty = np.zeros(len(classes), bool)
  out = []
  for k in range(num_clients):
    p = np.where(empty, 0.0, mix[k])
    if p.sum() <= 0:  # every class of this client's mix ran out: uniform over the rest
      p = (~empty).astype(float)
    p = p / p.sum()
    taken = []
    for _ in range(sizes[k]):
      c = rng.choice(len(classes), p=p)
      taken.append(pools[c].pop())
      if not pools[c]:
        empty[c] = True
        if empty.all():
          break
        p = np.where(empty, 0.0, mix[k])
        if p.sum() <= 0:
          p = (~empty).astype(float)
        p = p / p.sum()
    out.append(np.sort(np.asarray(taken, np.int64)))
  return out


def stratified_holdout(labels: np.ndarray, fraction: float,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """(kept, held out) indices; each class gives ``round(fraction * n_c)`` examples."""
  held = []
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    held.append(idx[:int(round(fraction * len(idx)))])
  held = np.sort(np.concatenate(held))
  kept = np.setdiff1d(np.arange(len(labels)), held)
  return kept, held


def hold_out_clients(clients: list[np.ndarray], num_validation: int,
                     rng: np.random.Generator) -> tuple[list[np.ndarray], tuple]:
  """(training clients in their order, validation clients): a random ``num_validation``."""
  if not 0 <= num_validation < len(clients):
    raise DataError(f'{num_validation} validation clients of {len(clients)}: expected '
                    f'0..{len(clients) - 1} (some clients must train)')
  if num_validation == 0:
    return list(clients), ()
  held = set(rng.choice(len(clients), size=num_validation, replace=False).tolist())
  return ([c for i, c in enumerate(clients) if i not in held],
          tuple(clients[i] for i in sorted(held)))


def read_split(name: str, source: str, folder: str | None, split: str):
  """Normalised float32 images (N, H, W, C) and int32 labels of one split."""
  # The data package's reader dispatch (digits | raw | tfds | auto).
  pixels, labels, _, _ = sources._read(  # pylint: disable=protected-access
      {'name': name, 'split': split, 'source': source, 'dir': folder})
  spec = SPECS[name]
  sources._check(pixels, labels, spec, f'{name} {split}')  # pylint: disable=protected-access
  return normalise(pixels, spec), np.asarray(labels, np.int32)


def has_official_test(name: str, folder: str | None) -> bool:
  return (name != 'digits' and folder is not None
          and raw.has_raw(Path(folder).expanduser(), name, 'train')
          and raw.has_raw(Path(folder).expanduser(), name, 'test'))


def client_split(*, name: str, source: str, folder: str | None, split: str,
                 test: str, test_fraction: float, num_clients: int, alpha: float,
                 seed: int, num_validation_clients: int = 0) -> ClientSplit:
  """The clients' index arrays, the validation clients' and the global test set.

  Args:
    name, source, folder, split: which images (as ``config.data``).
    test: ``'official'`` (the clients share ``split``, the server evaluates on
      the official test split) or ``'holdout'`` (a stratified ``test_fraction``
      of ``split`` is held out first).
    test_fraction: the held-out fraction for ``'holdout'``.
    num_clients, alpha: the Dirichlet partition (validation clients included).
    seed: the partition's seed.
    num_validation_clients: how many of the ``num_clients`` never train
      (:func:`hold_out_clients`, drawn after the partition).
  """
  rng = np.random.default_rng(seed)
  if test == 'official':
    images, labels = read_split(name, source, folder, split)
    test_images, test_labels = read_split(name, source, folder, 'test')
  elif test == 'holdout':
    all_images, all_labels = read_split(name, source, folder, split)
    kept, held = stratified_holdout(all_labels, test_fraction, rng)
    images, labels = all_images[kept], all_labels[kept]
    test_images, test_labels = all_images[held], all_labels[held]
  else:
    raise DataError(f"data.test={test!r}: expected 'official' or 'holdout'")
  if len(labels) < num_clients:
    raise DataError(f'{len(labels)} training images cannot fill {num_clients} clients')
  clients = lda_partition(labels, num_clients, alpha, rng)
  clients, validation = hold_out_clients(clients, num_validation_clients, rng)
  return ClientSplit(clients, images, labels, test_images, test_labels, validation)
