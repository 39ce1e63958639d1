"""sec_mm: Semantic Equitable Clustering (SEC) models for mmpretrain, mmdet and mmseg."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_version():
    text = (HERE / 'sec_mm' / 'version.py').read_text()
    return re.search(r"__version__ = '([^']+)'", text).group(1)


def read_requirements(name):
    lines = (HERE / 'requirements' / name).read_text().splitlines()
    return [line.split('#')[0].strip() for line in lines
            if line.split('#')[0].strip()]


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
    },
    license='Apache-2.0',
    zip_safe=False,
)
