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
    install_requires=read_requirements('runtime.txt') + read_requirements('mmcv.txt'),
    extras_require={
        'tests': read_requirements('tests.txt'),
        'onnx': read_requirements('onnx.txt'),
    },
    license='Apache-2.0',
    zip_safe=False,
)
