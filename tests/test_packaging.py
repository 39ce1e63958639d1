"""Installing sec_mm into a user's OpenMMLab environment must leave that environment alone."""
import json
import subprocess
import sys
import venv
from email.parser import Parser
from pathlib import Path
from zipfile import ZipFile

import pytest

# What users bring themselves: their own (CUDA) torch build and their OpenMMLab stack.
USER_STACK = {'torch', 'torchvision', 'mmcv', 'mmengine', 'mmdet', 'mmsegmentation',
              'mmpretrain', 'transformers'}


def _normalise(name: str) -> str:
    return name.lower().replace('_', '-')


def _requirement_name(requirement: str) -> str:
    for stop in ' ;<>=!~[(':
        requirement = requirement.split(stop)[0]
    return _normalise(requirement)


def _pip(python, *args, **kwargs):
    result = subprocess.run([str(python), '-m', 'pip', '--disable-pip-version-check', *args],
                            capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f'pip {" ".join(args)} failed:\n{result.stdout}\n{result.stderr}'
    return result


def test_wheel_requires_nothing_of_the_users_stack(tmp_path, repo_root):
    _pip(sys.executable, 'wheel', '--no-deps', '--no-build-isolation', '-w', str(tmp_path),
         str(repo_root))
    wheel, = tmp_path.glob('sec_mm-*.whl')
    with ZipFile(wheel) as archive:
        metadata_name, = [n for n in archive.namelist() if n.endswith('.dist-info/METADATA')]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    requires = metadata.get_all('Requires-Dist')
    always = {_requirement_name(r) for r in requires if 'extra ==' not in r}
    assert always == {'numpy'}
    extras = {}
    for requirement in requires:
        if 'extra ==' in requirement:
            extra = requirement.split('extra ==')[1].strip().strip('"\'')
            extras.setdefault(extra, set()).add(_requirement_name(requirement))
    # The OpenMMLab stack, and what mmseg imports without declaring it.
    assert extras['mim'] == {'mmengine', 'mmcv', 'mmpretrain', 'mmdet', 'mmsegmentation',
                             'ftfy', 'regex'}
    assert 'transformers' in extras['multimodal']
    # torch is never required, not even by an extra: pip would replace the user's build.
    assert not any({'torch', 'torchvision'} & names for names in extras.values())


@pytest.mark.e2e
def test_install_into_an_environment_with_another_torch_replaces_nothing(
        tmp_path, repo_root, mmcv_wheel):
    env_dir = tmp_path / 'user_env'
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / 'bin' / 'python'
    # A user's stack: a torch other than the project's and mmcv already installed.
    _pip(python, 'install', '--no-deps', 'torch==2.13.0+cpu', 'numpy==1.26.4', 'setuptools==80.10.2',
         str(mmcv_wheel))
    report = tmp_path / 'report.json'
    _pip(python, 'install', '--dry-run', '--no-index', '--no-build-isolation', '--report',
         str(report), str(repo_root))
    to_install = {_normalise(item['metadata']['name'])
                  for item in json.loads(report.read_text())['install']}
    assert to_install == {'sec-mm'}, to_install
    installed = _pip(python, 'list', '--format=json').stdout
    versions = {_normalise(p['name']): p['version'] for p in json.loads(installed)}
    assert versions['torch'] == '2.13.0+cpu' and versions['mmcv'] == '2.1.0'


@pytest.fixture
def mmcv_wheel(repo_root) -> Path:
    wheels = sorted((repo_root.parent / 'shared' / 'wheels').glob('mmcv-2.1.0-*.whl'))
    if not wheels:
        raise FileNotFoundError('../shared/wheels has no mmcv 2.1.0 wheel (it lives beside the '
                                'repository).')
    return wheels[0]
