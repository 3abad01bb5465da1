"""`pip install` of the package into a fresh virtual environment (issue 11, item 9).

The prox/accelerate transforms are meant to be used from other projects, so the package must
install with plain pip from a clean venv and import from there, not from this checkout.
"""

import ast
import configparser
import os
import pathlib
import re
import shutil
import site
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs inside the fresh venv, from a folder outside the checkout: `mg` must come from the venv.
CHECK = """
import jax.numpy as jnp, optax
import mg, mg.optim, mg.prox
assert mg.__file__.startswith({venv!r}), mg.__file__
tx = optax.chain(optax.sgd(0.5), mg.optim.proximal('lasso', strength=0.1, learning_rate=0.5))
params = {{'w': jnp.array([1.0, -0.05])}}
updates, _ = tx.update({{'w': jnp.array([0.2, 0.0])}}, tx.init(params), params)
print('ok', optax.apply_updates(params, updates)['w'].tolist())
"""


@pytest.mark.slow
@pytest.mark.parametrize('editable', [False, True])
def test_pip_install_into_a_fresh_venv(tmp_path, editable):
  venv = tmp_path / 'venv'
  subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
  # The heavy dependencies (jax, optax, ...) come from this interpreter's site-packages through
  # a .pth file: the test is about installing *this* package, not about re-downloading jax.
  pth = next((venv / 'lib').glob('python*')) / 'site-packages' / 'deps.pth'
  pth.write_text('\n'.join(site.getsitepackages()) + '\n')
  pip = [str(venv / 'bin' / 'python'), '-m', 'pip', 'install', '-q', '--no-deps']
  source = ROOT
  if not editable:  # a regular build writes build/ beside the sources: build from a copy
    source = tmp_path / 'src'
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        '.git', '.venv', 'runs', 'build', '*.egg-info', '__pycache__', '.pytest_cache'))
  proc = subprocess.run(pip + (['-e', ROOT] if editable else [str(source)]),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  expected = ROOT if editable else str(venv)
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env['JAX_PLATFORMS'] = 'cpu'
  proc = subprocess.run([str(venv / 'bin' / 'python'), '-c', CHECK.format(venv=expected)],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # sgd step: 1 - 0.5 * 0.2 = 0.9, then soft threshold by 0.5 * 0.1: 0.85; -0.05 goes to 0.
  values = [float(v) for v in proc.stdout.split('ok ')[1].strip(' []\n').split(',')]
  assert values == pytest.approx([0.85, 0.0], abs=1e-6)
  # README's "Library use" example, as written, from the installed copy.
  proc = subprocess.run([str(venv / 'bin' / 'python'), '-c', readme_example()], cwd=tmp_path,
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  loss, norms = re.fullmatch(r'loss (\S+) gate group norms \[(.*)\]\n', proc.stdout).groups()
  norms = [float(v) for v in norms.split()]
  assert float(loss) < 1e-2 and norms[0] > 0.5 and norms[1] == 0.0, proc.stdout


def readme_example() -> str:
  """The first python block under README's "## Library use"."""
  with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
    text = f.read()
  section = text.split('\n## Library use\n', 1)[1].split('\n## ', 1)[0]
  return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def test_library_use_example_imports_mg_alone():
  """``import mg`` alone gives ``mg.optim`` and ``mg.prox`` (the example needs no more)."""
  example = readme_example()
  assert 'import mg\n' in example and 'import mg.' not in example
  proc = subprocess.run([sys.executable, '-c', 'import mg; print(mg.optim.accelerate, '
                         'mg.prox.group_lasso)'], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]


# Distribution of each third-party module the library imports; torch only in an extra.
DISTRIBUTIONS = {
    'absl': 'absl-py', 'chex': 'chex', 'flax': 'flax', 'jax': 'jax',
    'matplotlib': 'matplotlib', 'ml_collections': 'ml-collections', 'numpy': 'numpy',
    'optax': 'optax', 'orbax': 'orbax-checkpoint', 'sklearn': 'scikit-learn',
    'tensorflow_datasets': 'tensorflow-datasets', 'tqdm': 'tqdm',
}
EXTRAS = {'torch': 'torch'}
LOCAL = {'mg', 'configs', 'experiments', 'data_helpers', 'host_rules'}  # the tests' own


def _third_party_imports(folders) -> set:
  names = set()
  for folder in folders:
    for path in pathlib.Path(ROOT, folder).rglob('*.py'):
      for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
          names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
          names.add(node.module.split('.')[0])
  return names - set(sys.stdlib_module_names) - LOCAL


def _requirement_names(lines) -> set:
  return {re.split(r'[<>=\[; ]', line.strip())[0] for line in lines
          if line.strip() and not line.strip().startswith('#')}


def test_requirements_list_exactly_what_the_library_imports():
  imported = _third_party_imports(['mg', 'experiments', 'configs'])
  assert imported <= set(DISTRIBUTIONS) | set(EXTRAS), imported
  wanted = {DISTRIBUTIONS[m] for m in imported - set(EXTRAS)}
  with open(os.path.join(ROOT, 'requirements.txt')) as f:
    assert _requirement_names(f) == wanted
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(ROOT, 'setup.cfg'))
  assert _requirement_names(cfg['options']['install_requires'].splitlines()) == wanted
  extras = cfg['options.extras_require']
  assert _requirement_names(extras['torch'].splitlines()) == {EXTRAS[m] for m in EXTRAS}
  # The tests need pytest, and scipy for their NumPy references; pytest-xdist runs
  # them on two workers (setup.cfg's addopts), imported by pytest, not by a test.
  test_imports = _third_party_imports(['tests']) - imported - set(EXTRAS)
  assert {'pytest', 'scipy'} <= test_imports
  assert _requirement_names(extras['test'].splitlines()) == test_imports | {'pytest-xdist'}
