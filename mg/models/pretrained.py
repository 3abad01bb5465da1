"""Pretrained backbones for the ``flax.linen`` ViT of ``mg.models.vit``, read without PyTorch.

Two sources (``config.model.init_checkpoint``):

* a PyTorch ``.pth`` state dict, e.g. DeiT's ``deit_small_patch16_224-cd65a155.pth``
  (``{'model': state_dict}``), in PyTorch's zip format (the default since 1.6):
  a zip holding ``<name>/data.pkl`` and one raw little-endian file per storage,
  ``<name>/data/<key>``. The pickle is read by a restricted unpickler that
  admits only the few globals a state dict needs (``OrderedDict``, the tensor
  rebuild functions, the storage types) and turns anything else into an inert
  placeholder, so no code in the file runs. ``blocks.i.attn.qkv`` is split into
  q, k, v (``torch.chunk(3)`` along the output axis, as the public code does);
  torch ``Linear`` weights (out, in) become kernels (in, out); the patch
  convolution (d, C, p, p) becomes (p, p, C, d). ``head.*`` and ``norm.*`` are
  dropped (ReeFL's exits have their own head and norms).
* an ``.npz`` written by ``python -m experiments.pretrain`` (``flat path -> array``,
  the blocks stacked as the model holds them: ``blocks/q/kernel`` (D, d, d)).
  Files written before the blocks were stacked hold one entry per block
  (``blocks/3/q/kernel``); they load the same way, stacked on reading.

Only the backbone is replaced; Ree, the baselines' per-exit heads and LoRA factors keep
their initial values.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
import zlib
from typing import Any

import jax.numpy as jnp
import numpy as np

from mg.models import vit
from mg.models.vit import flatten, unflatten, unstack

_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'LongStorage': np.int64, 'IntStorage': np.int32, 'ShortStorage': np.int16,
    'CharStorage': np.int8, 'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
}


class _StorageType:
  def __init__(self, name):
    self.name = name


class _Opaque:
  """Stands in for any object a state dict does not need (inert)."""

  def __init__(self, *args, **kwargs):
    del args, kwargs

  def __setstate__(self, state):
    del state


def _rebuild_tensor(storage, offset, size, stride, *unused):
  del unused
  if not size:
    return np.array(storage[offset])
  itemsize = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(
      storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride))
  return np.array(view)


def _rebuild_parameter(data, *unused):
  del unused
  return data


class BackboneError(ValueError):
  """A file that holds no backbone for the model; the message says what is wrong."""


class _StateDictUnpickler(pickle.Unpickler):
  """Unpickles PyTorch's ``data.pkl`` with numpy arrays in place of tensors.

  ``refused``: the globals the pickle named that a state dict never needs (each
  became an inert placeholder; none was imported or run).
  """

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
    super().__init__(file)
    self._archive = archive
    self._prefix = prefix
    self.refused: list[str] = []

  def find_class(self, module, name):
    if (module, name) == ('collections', 'OrderedDict'):
      return collections.OrderedDict
    if module == 'torch._utils' and name == '_rebuild_tensor_v2':
      return _rebuild_tensor
    if module == 'torch._utils' and name == '_rebuild_parameter':
      return _rebuild_parameter
    if module == 'torch' and name in _DTYPES:
      return _StorageType(name)
    self.refused.append(f'{module}.{name}')
    return _Opaque

  def persistent_load(self, pid):
    kind, storage_type, key, _, numel = pid[:5]
    if kind != 'storage' or not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f'unsupported storage {pid!r}')
    dtype = np.dtype(_DTYPES[storage_type.name]).newbyteorder('<')
    raw = self._archive.read(f'{self._prefix}/data/{key}')
    return np.frombuffer(raw, dtype=dtype, count=int(numel)).astype(dtype.newbyteorder('='))


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """The tensors of a PyTorch zip-format checkpoint (``'model'`` entry if present)."""
  try:
    archive = zipfile.ZipFile(path)
  except zipfile.BadZipFile as e:
    raise ValueError(f'{path} is not a PyTorch zip-format checkpoint (the legacy '
                     'pre-1.6 format is not supported)') from e
  with archive:
    pkl = [n for n in archive.namelist() if n.endswith('/data.pkl')]
    if not pkl:
      raise ValueError(f'{path} has no data.pkl: not a PyTorch checkpoint')
    prefix = pkl[0][:-len('/data.pkl')]
    with archive.open(pkl[0]) as f:
      unpickler = _StateDictUnpickler(f, archive, prefix)
      obj = unpickler.load()
  if isinstance(obj, dict) and 'model' in obj and isinstance(obj['model'], dict):
    obj = obj['model']
  if not isinstance(obj, dict):
    refused = (f' (its pickle names {unpickler.refused[0]}, which a state dict never '
               'needs; nothing in it was run)' if unpickler.refused else '')
    raise BackboneError(f'{path} holds no state dict{refused}')
  return {k[len('module.'):] if k.startswith('module.') else k: v
          for k, v in obj.items() if isinstance(v, np.ndarray)}


def deit_to_flat(state: dict[str, np.ndarray], cfg: vit.ViTConfig) -> dict[str, np.ndarray]:
  """DeiT/timm ViT tensors -> ``{flat path: array}`` of this ViT's backbone."""
  d = cfg.dim
  out = {
      'patch/kernel': state['patch_embed.proj.weight'].transpose(2, 3, 1, 0),
      'patch/bias': state['patch_embed.proj.bias'],
      'cls': state['cls_token'].reshape(d),
      'pos': state['pos_embed'].reshape(-1, d),
  }
  names = {'norm1': 'ln1', 'norm2': 'ln2', 'attn.proj': 'proj', 'mlp.fc1': 'fc1',
           'mlp.fc2': 'fc2'}
  for i in range(cfg.depth):
    pre = f'blocks.{i}.'
    for theirs, ours in names.items():
      w, b = state[f'{pre}{theirs}.weight'], state[f'{pre}{theirs}.bias']
      if ours.startswith('ln'):
        out[f'blocks/{i}/{ours}/scale'], out[f'blocks/{i}/{ours}/bias'] = w, b
      else:
        out[f'blocks/{i}/{ours}/kernel'], out[f'blocks/{i}/{ours}/bias'] = w.T, b
    qkv_w = np.split(state[f'{pre}attn.qkv.weight'], 3, axis=0)
    qkv_b = np.split(state[f'{pre}attn.qkv.bias'], 3, axis=0)
    for name, w, b in zip('qkv', qkv_w, qkv_b):
      out[f'blocks/{i}/{name}/kernel'], out[f'blocks/{i}/{name}/bias'] = w.T, b
  return out


def is_backbone(path: str) -> bool:
  """What a pretrained backbone holds: not what reads the exits (Ree; the baselines'
  per-exit ``heads``), not LoRA factors."""
  return (not path.startswith(('ree/', 'heads/'))
          and path.rsplit('/', 1)[-1] not in ('lora_a', 'lora_b'))


def read_flat(path: str, cfg: vit.ViTConfig) -> dict[str, np.ndarray]:
  """``{flat path: array}`` of the backbone file ``path`` (``.npz`` or ``.pth``).

  Raises:
    BackboneError: the file cannot be read as a backbone, with the reason.
  """
  try:
    if path.endswith('.npz'):
      if not zipfile.is_zipfile(path):
        raise BackboneError(f'{path} is not a readable .npz backbone (not a zip archive: '
                            'empty, cut short or another format)')
      with np.load(path) as z:
        # Stacked blocks (``blocks/q/kernel`` (D, ...), written since the blocks
        # are scanned) or one entry per block (written before): both by block.
        return unstack({k: z[k] for k in z.files})
    return deit_to_flat(read_state_dict(path), cfg)
  except BackboneError:
    raise
  except KeyError as e:
    raise BackboneError(f'{path} lacks the tensor {e.args[0]!r} of a DeiT-style ViT with '
                        f'{cfg.depth} blocks') from e
  except ValueError as e:
    if 'Object arrays' in str(e) or 'pickled' in str(e):
      raise BackboneError(f'{path} holds Python objects, not only numeric arrays (a '
                          'backbone from python -m experiments.pretrain holds arrays)') from e
    raise BackboneError(f'{path}: {str(e).splitlines()[0]}') from e
  except (OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, zlib.error,
          AttributeError, TypeError, IndexError) as e:
    reason = str(e).splitlines()[0] if str(e) else 'empty or cut short'
    raise BackboneError(f'{path} is not a readable {".npz" if path.endswith(".npz") else ".pth"} '
                        f'backbone ({type(e).__name__}: {reason})') from e


def load_backbone(path: str, params: dict, cfg: vit.ViTConfig) -> dict:
  """``params`` with the backbone read from ``path`` (``.pth`` or ``.npz``).

  Raises:
    BackboneError: the file holds no backbone that fits ``cfg``, with the reason.
  """
  flat = read_flat(path, cfg)
  current = flatten(params)
  new: dict[str, Any] = dict(current)
  for k, v in flat.items():
    if not is_backbone(k):
      continue
    if k.startswith('blocks/') and int(k.split('/')[1]) >= cfg.depth:
      continue
    if k not in current:
      raise BackboneError(f'{path}: {k} has no place in this model')
    if not np.issubdtype(np.asarray(v).dtype, np.number):
      raise BackboneError(f'{path}: {k} is {np.asarray(v).dtype}, not a numeric array')
    if tuple(np.shape(v)) != tuple(current[k].shape):
      raise BackboneError(f'{path}: {k} is {np.shape(v)}, the model needs '
                          f'{tuple(current[k].shape)}')
    new[k] = jnp.asarray(v, jnp.float32)
  missing = [k for k in current if is_backbone(k) and k not in flat]
  if missing:
    raise BackboneError(f'{path} lacks {len(missing)} backbone arrays, e.g. {missing[0]}')
  return unflatten(new)
