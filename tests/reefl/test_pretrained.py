"""Reading a DeiT-style PyTorch state dict without torch, on a synthetic file."""

import collections
import io
import os
import pickle
import sys
import types
import zipfile

import jax
import numpy as np
import pytest

from mg.errors import ConfigError

from mg.models import pretrained
from mg.models import vit

CFG = vit.ViTConfig(image_size=8, patch_size=4, in_chans=3, dim=8, depth=2, heads=2,
                    num_exits=2, num_classes=3)


def _fake_torch():
  """Stand-ins with torch's module paths, so pickle writes torch's globals."""
  torch = types.ModuleType('torch')
  utils = types.ModuleType('torch._utils')

  class FloatStorage:  # pylint: disable=too-few-public-methods
    pass
  FloatStorage.__module__ = 'torch'
  FloatStorage.__qualname__ = 'FloatStorage'

  def _rebuild_tensor_v2(*args):
    return args
  _rebuild_tensor_v2.__module__ = 'torch._utils'
  _rebuild_tensor_v2.__qualname__ = '_rebuild_tensor_v2'
  torch.FloatStorage = FloatStorage
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  torch._utils = utils
  return torch, utils


class _Tensor:
  def __init__(self, array, key):
    self.array, self.key = np.ascontiguousarray(array, np.float32), key


def write_pth(path, state):
  """A zip-format checkpoint ``{'model': state}`` as torch.save writes it."""
  torch, utils = _fake_torch()
  saved = dict(sys.modules)
  sys.modules.update({'torch': torch, 'torch._utils': utils})
  try:
    tensors = {k: _Tensor(v, str(i)) for i, (k, v) in enumerate(state.items())}

    class Pickler(pickle.Pickler):
      def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
          return ('storage', torch.FloatStorage, obj.tensor.key, 'cpu', obj.tensor.array.size)
        return None

      def reducer_override(self, obj):
        if isinstance(obj, _Tensor):
          stride = tuple(s // 4 for s in obj.array.strides)
          return (utils._rebuild_tensor_v2,
                  (_StorageRef(obj), 0, obj.array.shape, stride, False, collections.OrderedDict()))
        return NotImplemented

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({'model': collections.OrderedDict(tensors), 'epoch': 300})
    with zipfile.ZipFile(path, 'w') as z:
      z.writestr('archive/data.pkl', buf.getvalue())
      for t in tensors.values():
        z.writestr(f'archive/data/{t.key}', t.array.tobytes())
  finally:
    sys.modules.clear()
    sys.modules.update(saved)


class _StorageRef:
  def __init__(self, tensor):
    self.tensor = tensor


def _deit_state(cfg, rng):
  d, p, h = cfg.dim, cfg.patch_size, cfg.hidden
  s = {'patch_embed.proj.weight': rng.normal(size=(d, 3, p, p)),
       'patch_embed.proj.bias': rng.normal(size=d),
       'cls_token': rng.normal(size=(1, 1, d)),
       'pos_embed': rng.normal(size=(1, cfg.num_patches + 1, d)),
       'norm.weight': rng.normal(size=d), 'norm.bias': rng.normal(size=d),
       'head.weight': rng.normal(size=(1000, d)), 'head.bias': rng.normal(size=1000)}
  for i in range(cfg.depth):
    for n, shape in [('norm1', (d,)), ('norm2', (d,)), ('attn.qkv', (3 * d, d)),
                     ('attn.proj', (d, d)), ('mlp.fc1', (h, d)), ('mlp.fc2', (d, h))]:
      s[f'blocks.{i}.{n}.weight'] = rng.normal(size=shape)
      s[f'blocks.{i}.{n}.bias'] = rng.normal(size=shape[:1])
  return {k: np.asarray(v, np.float32) for k, v in s.items()}


def test_state_dict_reader_and_qkv_split(tmp_path):
  state = _deit_state(CFG, np.random.default_rng(0))
  path = str(tmp_path / 'deit.pth')
  write_pth(path, state)
  read = pretrained.read_state_dict(path)
  assert set(read) == set(state)
  for k in state:
    np.testing.assert_array_equal(read[k], state[k])

  params = vit.init(jax.random.PRNGKey(0), CFG)
  loaded = pretrained.load_backbone(path, params, CFG)
  qkv = state['blocks.1.attn.qkv.weight']
  np.testing.assert_array_equal(loaded['blocks']['q']['kernel'][1], qkv[:8].T)
  np.testing.assert_array_equal(loaded['blocks']['k']['kernel'][1], qkv[8:16].T)
  np.testing.assert_array_equal(loaded['blocks']['v']['bias'][1],
                                state['blocks.1.attn.qkv.bias'][16:])
  np.testing.assert_array_equal(loaded['patch']['kernel'][1, 2, 0],
                                state['patch_embed.proj.weight'][:, 0, 1, 2])
  np.testing.assert_array_equal(loaded['ree']['pos'], params['ree']['pos'])  # untouched
  # The mapped conv equals torch's Conv2d on a patch (cross-correlation).
  x = np.random.default_rng(1).normal(size=(1, 8, 8, 3)).astype(np.float32)
  tokens = np.asarray(vit.embed(loaded, x, CFG))
  w, b = state['patch_embed.proj.weight'], state['patch_embed.proj.bias']
  want = np.einsum('dcij,ijc->d', w, x[0, 0:4, 4:8]) + b  # patch (row 0, col 1)
  np.testing.assert_allclose(tokens[0, 2] - loaded['pos'][2], want, rtol=1e-4, atol=1e-4)


def test_reader_runs_no_code_from_the_file(tmp_path):
  path = str(tmp_path / 'evil.pth')
  payload = pickle.dumps({'model': {}, 'x': _Evil()}, protocol=2)
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('archive/data.pkl', payload)
  assert pretrained.read_state_dict(path) == {}


class _Evil:
  def __reduce__(self):
    return (print, ('this must not run',))


def test_shape_mismatch_is_an_error(tmp_path):
  state = _deit_state(CFG._replace(dim=16, heads=2), np.random.default_rng(0))
  path = str(tmp_path / 'wide.pth')
  write_pth(path, state)
  with pytest.raises(ValueError):
    pretrained.load_backbone(path, vit.init(jax.random.PRNGKey(0), CFG), CFG)


@pytest.mark.parametrize('layout', ['stacked', 'per_block'])
def test_npz_backbone_round_trip_and_resize(tmp_path, layout):
  """Backbones load stacked (as written now) or one entry per block (as written before)."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  from mg.models.vit import flatten  # pylint: disable=g-import-not-at-top
  source = vit.init(jax.random.PRNGKey(3), CFG)
  path = str(tmp_path / 'backbone.npz')
  written = (traverse_util.flatten_dict(source, sep='/') if layout == 'stacked'
             else flatten(source))
  assert ('blocks/q/kernel' in written) == (layout == 'stacked')
  np.savez(path, **{k: np.asarray(v) for k, v in written.items() if not k.startswith('ree/')})
  target = vit.init(jax.random.PRNGKey(4), CFG)
  loaded = flatten(pretrained.load_backbone(path, target, CFG))
  for k, v in flatten(source).items():
    want = flatten(target)[k] if k.startswith('ree/') else v
    np.testing.assert_array_equal(loaded[k], want)
  # Smaller images are resized to the model's size (bilinear), not rejected.
  small = np.ones((1, 4, 4, 3), np.float32)
  assert vit.embed(source, small, CFG).shape == (1, CFG.num_patches + 1, CFG.dim)


def test_fit_images_greys_by_luma_and_centre_crops():
  from mg.reefl import pretrain  # pylint: disable=g-import-not-at-top
  images = np.zeros((2, 6, 6, 3), np.float32)
  images[..., 0], images[..., 1], images[..., 2] = 1.0, 2.0, 4.0
  images[:, 0] = 100.0  # the top row is cropped away
  fitted = pretrain.fit_images(images, 4, 1)
  assert fitted.shape == (2, 4, 4, 1)
  np.testing.assert_allclose(fitted, 0.299 + 2 * 0.587 + 4 * 0.114, rtol=1e-6)
  # Same channels and a smaller image: untouched (the model resizes on the fly).
  np.testing.assert_array_equal(pretrain.fit_images(images[..., :1], 8, 1), images[..., :1])
  with pytest.raises(ValueError, match='model.in_chans=2: cannot fit 3-channel'):
    pretrain.fit_images(images, 4, 2)


def test_pretrain_writes_a_backbone_the_federated_model_loads(tmp_path):
  """Pretrained on digits as a plain ViT, read back by a ReeFL run's model; progress per epoch."""
  from configs.reefl import test as reefl_test  # pylint: disable=g-import-not-at-top
  from mg.reefl import config as reefl_config, pretrain, run as reefl_run  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  config = reefl_test.get_config()
  out = str(tmp_path / 'backbone.npz')
  seen = []
  acc = pretrain.pretrain(config, out, epochs=2, lr=1e-2, batch=64,
                          progress=lambda *a: seen.append(a))
  assert [s[0] for s in seen] == [1, 2] and seen[-1][2] == acc
  assert seen[1][1] < seen[0][1]          # the training loss falls
  assert acc > 0.3                        # digits: far above chance (0.1) after 2 epochs
  cfg = reefl_config.model_config(config)
  # What trains is a plain ViT: one head after the last block, no Ree.
  plain = pretrain.plain_init(config, cfg, jax.random.PRNGKey(0))
  assert 'ree' not in plain and list(plain['heads']) == [str(cfg.num_exits - 1)]
  fresh = reefl_run.initial_params(config, cfg, jax.random.PRNGKey(7))
  loaded = traverse_util.flatten_dict(pretrained.load_backbone(out, fresh, cfg), sep='/')
  with np.load(out) as z:
    assert 'blocks/q/kernel' in z.files  # the blocks stacked, as the model holds them
    assert z.files and not any(k.startswith('ree/') for k in z.files)
    for k in z.files:
      np.testing.assert_array_equal(loaded[k], z[k])
  # The head baselines' model reads it too; their per-exit heads keep their init.
  heads_cfg = reefl_config.model_config(config, modulation=False)
  heads_init = reefl_run._heads_init(jax.random.PRNGKey(7), heads_cfg)  # pylint: disable=protected-access
  by_path = lambda tree: traverse_util.flatten_dict(tree, sep='/')
  heads = by_path(pretrained.load_backbone(out, heads_init, heads_cfg))
  assert any(k.startswith('heads/') for k in heads)
  with np.load(out) as z:
    for k, v in heads.items():
      want = z[k] if k in z.files else by_path(heads_init)[k]
      np.testing.assert_array_equal(v, want)
  # A finite loss far above the loss at initialisation diverges too (an absolute bound:
  # this run explodes within its first epoch): nothing is written.
  with pytest.raises(ConfigError, match=r'pretraining diverged: the training loss is '
                     r'\d\.\d+e\+0[6-9] in epoch 1 \(at initialisation about 2.3\)'):
    pretrain.pretrain(config, str(tmp_path / 'blown.npz'), epochs=1, lr=1e3, batch=128)
  assert not (tmp_path / 'blown.npz').exists()
  config.model.init_checkpoint = str(tmp_path / 'missing.npz')
  with pytest.raises(ConfigError, match='missing.npz.* is not a file'):
    reefl_config.validate(config)


def _npz(path, arrays):
  np.savez(path, **arrays)
  return str(path)


def _bad_backbones(tmp_path, cfg):
  """``{case: (file, the reason its message gives)}``: every kind of file that holds no
  backbone of the model ``cfg``."""
  from mg.models.vit import flatten  # pylint: disable=g-import-not-at-top
  good = {k: np.asarray(v) for k, v in flatten(vit.init(jax.random.PRNGKey(3), cfg)).items()
          if pretrained.is_backbone(k)}
  pth = tmp_path / 'good.pth'
  write_pth(str(pth), _deit_state(cfg, np.random.default_rng(0)))
  npz = _npz(tmp_path / 'good.npz', good)
  files = {}
  (tmp_path / 'empty.pth').write_bytes(b'')
  files['empty pth'] = (str(tmp_path / 'empty.pth'), 'not a PyTorch zip-format checkpoint')
  (tmp_path / 'cut.pth').write_bytes(pth.read_bytes()[:len(pth.read_bytes()) // 2])
  files['truncated pth'] = (str(tmp_path / 'cut.pth'), 'not a PyTorch zip-format checkpoint')
  evil = tmp_path / 'evil.pth'
  with zipfile.ZipFile(evil, 'w') as z:
    z.writestr('archive/data.pkl', pickle.dumps(_Evil(), protocol=2))
  files['forbidden global'] = (str(evil), 'holds no state dict (its pickle names __builtin__.print')
  missing_deit = tmp_path / 'short.pth'
  write_pth(str(missing_deit), {'cls_token': np.zeros((1, 1, cfg.dim), np.float32)})
  files['not a DeiT'] = (str(missing_deit), "lacks the tensor 'patch_embed.proj.weight'")
  (tmp_path / 'empty.npz').write_bytes(b'')
  files['empty npz'] = (str(tmp_path / 'empty.npz'), 'is not a readable .npz backbone')
  with open(npz, 'rb') as f:
    (tmp_path / 'cut.npz').write_bytes(f.read()[:200])
  files['truncated npz'] = (str(tmp_path / 'cut.npz'), 'is not a readable .npz backbone')
  files['unrelated keys'] = (_npz(tmp_path / 'other.npz', dict(good, weights=np.zeros(3))),
                             'weights has no place in this model')
  files['object arrays'] = (_npz(tmp_path / 'objects.npz', dict(
      good, cls=np.array([None, 1], dtype=object))), 'holds Python objects')
  files['empty state dict'] = (_npz(tmp_path / 'nothing.npz', {}), 'lacks')
  files['wrong shape'] = (_npz(tmp_path / 'shape.npz', dict(good, cls=np.zeros(cfg.dim + 1))),
                          f'cls is ({cfg.dim + 1},), the model needs ({cfg.dim},)')
  files['missing key'] = (_npz(tmp_path / 'missing.npz', {k: v for k, v in good.items()
                                                          if k != 'pos'}), 'e.g. pos')
  return files


def test_every_bad_backbone_file_is_one_line_before_the_workdir_is_touched(tmp_path):
  from configs.reefl import test as reefl_test  # pylint: disable=g-import-not-at-top
  from mg.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from mg.reefl import config as reefl_config  # pylint: disable=g-import-not-at-top
  from mg.reefl import run as reefl_run  # pylint: disable=g-import-not-at-top
  config = reefl_test.get_config()
  bad = _bad_backbones(tmp_path, reefl_config.model_config(config))
  for case, (path, reason) in bad.items():
    config.model.init_checkpoint = path
    with pytest.raises(ConfigError) as error:
      reefl_run.check_backbone(config)
    message = str(error.value)
    assert message.startswith(f'model.init_checkpoint: {path}'), (case, message)
    assert reason in message and '\n' not in message, (case, message)


@pytest.mark.parametrize('flags, message', [
    (dict(epochs=-1), '--epochs=-1: expected an integer >= 1'),
    (dict(batch=0), '--batch=0: expected an integer >= 1'),
    (dict(batch=100000), '--batch=100000 is more than the 1618 training images'),
    (dict(lr=-1.0), '--lr=-1.0: expected a number > 0'),
    (dict(out='missing/backbone.npz'), 'its folder .*missing does not exist'),
    (dict(out='.'), r'--out=\.: expected a .npz file'),
    (dict(depth=3), 'model.depth=3 is not a multiple of model.num_exits=2'),
    (dict(system='metagater'), "system='metagater': expected a ReeFL config"),
])
def test_pretraining_refuses_bad_flags_and_configs_before_any_work(tmp_path, monkeypatch,
                                                                   flags, message):
  from configs.reefl import test as reefl_test  # pylint: disable=g-import-not-at-top
  from mg.reefl import pretrain  # pylint: disable=g-import-not-at-top
  config = reefl_test.get_config()
  if 'depth' in flags:
    config.model.depth = flags.pop('depth')
  if 'system' in flags:
    config.system = flags.pop('system')
  monkeypatch.chdir(tmp_path)
  args = {**dict(out='backbone.npz', epochs=1, lr=1e-3, batch=64), **flags}
  with pytest.raises(ConfigError, match=message):
    pretrain.pretrain(config, args.pop('out'), **args)
  assert os.listdir(tmp_path) == []
