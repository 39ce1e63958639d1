"""The model index: metafiles that match the configs, mmpretrain finding the classifiers by
name, and the same from a regular (non-editable) ``pip install`` of the package."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from modelindex.load_model_index import load

import sec_mm  # noqa: F401  (registers the index)
from sec_mm.model_index import (MODEL_INDEX, classification_metafiles, mim_root,
                                      register_model_index)

REPO = Path(__file__).resolve().parents[1]
SECVIT = ['secvit-b_8xb128_in1k', 'secvit-l_8xb128_in1k', 'secvit-s_8xb128_in1k',
          'secvit-t_8xb128_in1k']
SEC_OTHERS = ['sec-deit-b_4xb256_in1k', 'sec-deit-s_4xb256_in1k', 'sec-fastervit-0_8xb128_in1k',
              'sec-fastervit-1_8xb128_in1k', 'sec-swin-b_16xb64_in1k', 'sec-swin-s_16xb64_in1k',
              'sec-swin-t_16xb64_in1k']


def load_index():
    index = load(str(REPO / MODEL_INDEX))
    index.build_models_with_collections()
    return index


def indexed_models():
    return load_index().models


def model_configs():
    """Every model config of the three codebases (the toy configs are for trying the tools)."""
    folders = ('classification', 'detection', 'segmentation')
    return sorted(p for folder in folders for p in (REPO / 'configs' / folder).glob('*/*.py'))


def test_index_imports_every_metafile():
    imports = yaml.safe_load((REPO / MODEL_INDEX).read_text())['Import']
    on_disk = sorted(str(p.relative_to(REPO)) for p in REPO.glob('configs/*/*/metafile.yml'))
    assert sorted(imports) == on_disk


def test_every_config_has_one_entry_named_after_it():
    models = indexed_models()
    names = [m.name for m in models]
    assert len(names) == len(set(names))
    configs = {m.name: m.config for m in models}
    assert sorted(configs) == sorted(p.stem for p in model_configs())
    for name, config in configs.items():
        assert Path(config).stem == name
        assert (REPO / config).is_file(), config


def test_every_collection_is_defined_once():
    # `mim search` fails with a KeyError on a model whose collection no metafile defines.
    index = load_index()
    collections = [collection.name for collection in index.collections]
    assert len(collections) == len(set(collections))
    assert {model.in_collection for model in index.models} <= set(collections)


def test_entries_have_results_and_the_release_they_come_from():
    for model in indexed_models():
        tasks = {result.task for result in model.results}
        assert tasks, model.name
        if model.name.startswith('secvit-'):
            assert tasks == {'Image Classification'}
            # The authors' released weights, converted with tools/model_converters.
            converted = model.data['Converted From']
            assert converted['Weights'].startswith('https://pan.baidu.com/')
            assert converted['Code'].startswith('https://github.com/qhfan/SecViT/blob/')


def test_list_models_finds_the_classifiers_only():
    from mmpretrain import list_models
    assert list_models('*secvit*') == SECVIT
    assert list_models('sec-*') == SEC_OTHERS
    # mmpretrain's get_model cannot build mmdet/mmseg models: they stay out of its hub.
    assert list_models('mask-rcnn_sec*') == [] and list_models('upernet_sec*') == []
    assert register_model_index() is True  # idempotent: no "name conflict" error


def test_source_tree_is_the_index_root():
    assert mim_root() == REPO
    assert [p.parent.name for p in classification_metafiles(REPO)] == [
        'sec_deit', 'sec_fastervit', 'sec_swin', 'secvit']


def test_get_model_and_inference_model_by_name(tmp_path):
    from mmpretrain import get_model, inference_model
    from mmpretrain.apis import ModelHub

    model = get_model('secvit-t_8xb128_in1k')
    assert type(model.backbone).__name__ == 'SECViT'
    parameters = sum(p.numel() for p in model.parameters())
    assert parameters == ModelHub.get('secvit-t_8xb128_in1k').metadata.parameters == 14981800
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    # mmpretrain builds the inference pipeline in whatever default scope earlier tests left
    # (a fresh process has none); this test is about the index, not that stock quirk.
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        result = inference_model('secvit-t_8xb128_in1k', image)
    assert result['pred_scores'].shape == (1000, )  # the config's ImageNet classes
    assert isinstance(result['pred_class'], str)


# Run from a folder outside the repository, with the installed package only.
BY_NAME = r'''
import json, sys
import sec_mm
import mmpretrain
from mmpretrain.apis import ModelHub
model = mmpretrain.get_model('secvit-t_8xb128_in1k')
result = mmpretrain.inference_model('secvit-t_8xb128_in1k', sys.argv[1])
# To a file: the inferencer's progress bar shares stdout and may not end its line.
with open(sys.argv[2], 'w') as report:
    json.dump(dict(
        sec_mm=sec_mm.__file__, config=ModelHub.get('secvit-t_8xb128_in1k').config.filename,
        secvit=mmpretrain.list_models('*secvit*'), backbone=type(model.backbone).__name__,
        scores=list(result['pred_scores'].shape), pred_class=result['pred_class']), report)
'''


@pytest.mark.e2e
def test_by_name_from_a_regular_install(tmp_path):
    """``pip install .`` (no editable mode) into a scratch venv that reuses this stack."""
    venv = tmp_path / 'venv'
    subprocess.run([getattr(sys, '_base_executable', sys.executable), '-m', 'venv',
                    '--without-pip', str(venv)], check=True)
    python = venv / 'bin' / 'python'
    purelib = subprocess.run(
        [str(python), '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'],
        check=True, text=True, stdout=subprocess.PIPE).stdout.strip()
    # The stack (torch, mm*, pip, setuptools) from this environment, after the venv's own
    # site-packages; its .pth files (the editable sec_mm of the development set-up) are not
    # processed from there.
    Path(purelib, 'stack.pth').write_text(sysconfig.get_path('purelib') + '\n')

    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    source = tmp_path / 'source'
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=REPO,
                           check=True, text=True, stdout=subprocess.PIPE).stdout.split('\n')
    for name in filter(None, files):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PIP_USER')}
    install = subprocess.run(
        [str(python), '-m', 'pip', 'install', '--no-deps', '--no-build-isolation',
         '--no-index', '--quiet', str(source)],
        env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert install.returncode == 0, install.stdout[-4000:]
    installed = Path(purelib) / 'sec_mm'
    assert (installed / '.mim' / MODEL_INDEX).is_file()

    work = tmp_path / 'elsewhere'
    work.mkdir()
    image = work / 'image.jpg'
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (64, 80, 3), np.uint8))
    done = subprocess.run([str(python), '-c', BY_NAME, str(image), str(work / 'report.json')],
                          cwd=work, env=env,
                          text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((work / 'report.json').read_text())
    assert Path(report['sec_mm']).parent == installed
    assert Path(report['config']) == (installed / '.mim/configs/classification/secvit/'
                                      'secvit-t_8xb128_in1k.py')
    assert report['secvit'] == SECVIT
    assert report['backbone'] == 'SECViT'
    assert report['scores'] == [1000] and report['pred_class']
