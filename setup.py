"""sec_mm: Semantic Equitable Clustering (SEC) models for mmpretrain, mmdet and mmseg."""
import re
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
# What OpenMMLab packages ship under `<package>/.mim`: the model index and the configs it
# names, read by mmpretrain's ModelHub (sec_mm/model_index.py) and by `mim search`.
MIM_FILES = ('model-index.yml', 'configs')


def read_version():
    text = (HERE / 'sec_mm' / 'version.py').read_text()
    return re.search(r"__version__ = '([^']+)'", text).group(1)


def read_requirements(name):
    lines = (HERE / 'requirements' / name).read_text().splitlines()
    return [line.split('#')[0].strip() for line in lines
            if line.split('#')[0].strip()]


class BuildPyWithMim(build_py):
    """``build_py`` that also copies ``MIM_FILES`` into ``sec_mm/.mim`` of the build."""

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            return  # an editable install reads them from the source tree
        target = Path(self.build_lib) / 'sec_mm' / '.mim'
        shutil.rmtree(target, ignore_errors=True)  # no configs left over from older builds
        target.mkdir(parents=True)
        for name in MIM_FILES:
            source = HERE / name
            if source.is_dir():
                shutil.copytree(source, target / name,
                                ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
            else:
                shutil.copy2(source, target / name)


setup(
    name='sec_mm',
    version=read_version(),
    description='Semantic Equitable Clustering (SEC) backbones for OpenMMLab',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['sec_mm', 'sec_mm.*']),
    python_requires='>=3.9',
    # Never torch/torchvision: sec_mm runs on the user's own build, torch 2.1 to 2.14 (tested).
    # The OpenMMLab stack sits in the `mim` extra, as in mmdet and mmpretrain, so that
    # installing sec_mm into an existing environment changes none of its packages.
    install_requires=read_requirements('runtime.txt'),
    extras_require={
        'mim': read_requirements('mim.txt'),
        'multimodal': read_requirements('multimodal.txt'),
        'tests': read_requirements('tests.txt'),
        'fastervit': read_requirements('fastervit.txt'),
        'gradcam': read_requirements('gradcam.txt'),
        'onnx': read_requirements('onnx.txt'),
    },
    license='Apache-2.0',
    cmdclass={'build_py': BuildPyWithMim},
    zip_safe=False,
)
