"""What the code knows about each dataset: shape, classes, normalisation.

Images are normalised per channel, ``x = (pixel / pixel_max - mean) / std``,
with the usual published constants of each dataset (from its training split):

- MNIST: mean 0.1307, std 0.3081.
- CIFAR-10: mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616).
- CIFAR-100: mean (0.5071, 0.4865, 0.4409), std (0.2673, 0.2564, 0.2762).
- scikit-learn digits: pixels are 0..16, so ``pixel_max = 16``; mean 0.3053 and
  std 0.3760 are computed once over all 1,797 images after dividing by 16 and
  hard-coded here, so normalisation does not depend on which examples are
  loaded.

The MetaGater paper uses MNIST and CIFAR-10 (s.5.1) and CIFAR-100 (app. E.1)
(docs/design.md s.6); digits is the small offline stand-in (docs/design.md, "Data").
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class DatasetSpec(NamedTuple):
  """Static facts about one dataset."""
  name: str
  input_shape: tuple[int, int, int]  # (H, W, C) of one example
  num_classes: int
  mean: tuple[float, ...]            # per channel, after dividing by pixel_max
  std: tuple[float, ...]
  pixel_max: float                   # 255 for 8-bit images, 16 for digits


SPECS: dict[str, DatasetSpec] = {
    'digits': DatasetSpec('digits', (8, 8, 1), 10, (0.3053,), (0.3760,), 16.0),
    'mnist': DatasetSpec('mnist', (28, 28, 1), 10, (0.1307,), (0.3081,), 255.0),
    'cifar10': DatasetSpec('cifar10', (32, 32, 3), 10,
                           (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                           255.0),
    'cifar100': DatasetSpec('cifar100', (32, 32, 3), 100,
                            (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                            255.0),
}


def normalise(pixels: np.ndarray, spec: DatasetSpec) -> np.ndarray:
  """Raw pixels (N, H, W, C) -> float32 ``(pixel / pixel_max - mean) / std``.

  Makes exactly one float32 copy and works in place on it (CIFAR-10 as float32
  is ~0.7 GB).
  """
  images = pixels.astype(np.float32)
  images /= np.float32(spec.pixel_max)
  images -= np.asarray(spec.mean, np.float32)
  images /= np.asarray(spec.std, np.float32)
  return images
