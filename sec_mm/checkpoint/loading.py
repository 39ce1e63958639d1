"""Weights-only checkpoint loading, whatever the file's path or scheme.

Unpickling runs whatever a file names, so a checkpoint from an untrusted source (a file-sharing
link, a mirror, a shared disk) could run code. mmengine loads local files with ``torch.load``'s
default (weights-only from torch 2.6, everything before) and every other scheme with
``weights_only=False`` (``http(s)://`` through ``torch.hub.load_state_dict_from_url``), and
``load_from``, ``--resume``, ``init_cfg=dict(type='Pretrained')``, the inferencers and the test
tools all end there.

:func:`load_checkpoint` is the one loader here: a local file is first checked to be a complete
PyTorch checkpoint (:func:`~sec_mm.checkpoint.integrity.checkpoint_problem`), downloads land in
torch's hub cache and are read the same way, and everything is read with
``torch.load(weights_only=True)``, which allows tensors, containers, numbers and the classes
registered in :mod:`~sec_mm.checkpoint.safe_globals`. :func:`secure_checkpoint_loaders` puts it
behind every scheme of mmengine's ``CheckpointLoader``; ``import sec_mm`` calls it.
"""
import io
import logging
import os
import os.path as osp
import pickle
import re
from typing import Any, Callable, Dict, Optional
from urllib.parse import urlparse

import torch
from mmengine.logging import print_log

from .integrity import bytes_problem, checkpoint_problem

__all__ = [
    'CheckpointFileError', 'UnsafeCheckpointError', 'load_checkpoint', 'download_checkpoint',
    'secure_checkpoint_loaders', 'SCHEMES'
]


class CheckpointFileError(ValueError):
    """A file that is not a complete PyTorch checkpoint (empty, truncated, damaged, an HTML
    page, ...)."""


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint that names code or classes weights-only loading does not allow."""


def _unsafe_message(source: str, error: Exception) -> str:
    text = str(error)
    found = (re.search(r'GLOBAL ([\w.]+)', text)
             or re.search(r'Unsupported (?:global|class):? ([\w.]+)', text))
    named = f' ({found.group(1)})' if found else ''
    # torch's own message goes on to suggest weights_only=False or allowing the global; only
    # its first sentence, what it found, is kept.
    reason = next((line.strip() for line in text.splitlines()
                   if 'Unpickler error' in line or 'Unsupported' in line), text.splitlines()[0])
    reason = reason.split('. ')[0].rstrip('.')
    return (
        f'{source}: refused: the checkpoint holds objects that are not weights{named}. sec_mm '
        'loads every checkpoint weights-only, so that no file can run code when it is '
        'loaded; checkpoints of runs that imported sec_mm, the converted SECViT release and '
        'plain state dicts load. If this file comes from a source you trust, keep only its '
        'weights once, in a Python session of your own: '
        "torch.save({'state_dict': torch.load(PATH, weights_only=False)['state_dict']}, NEW) "
        f'(that line runs whatever the file holds). [torch: {reason}]')


def _torch_load(source: Any, name: str, map_location: Any) -> Any:
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(_unsafe_message(name, error)) from error


def load_from_local(path: str, map_location: Any = 'cpu') -> Any:
    if not osp.isfile(path):
        raise FileNotFoundError(f'Checkpoint {path} does not exist.')
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointFileError(f'{path}: {problem}.')
    return _torch_load(path, path, map_location)


def _hub_dir() -> str:
    return osp.join(torch.hub.get_dir(), 'checkpoints')


def download_checkpoint(url: str, model_dir: Optional[str] = None,
                        progress: bool = False) -> str:
    """Download ``url`` into torch's hub cache (once) and return the local file.

    The cache is torch.hub's, under the URL's file name, where ``torch.hub.load_state_dict_from_url``
    (which mmengine uses) keeps it. In a distributed run the first process of each node
    downloads and the others wait.
    """
    from mmengine.dist import barrier, get_dist_info, get_local_rank
    folder = model_dir or _hub_dir()
    path = osp.join(folder, osp.basename(urlparse(url).path))
    _, world_size = get_dist_info()
    if get_local_rank() == 0 and not osp.isfile(path):
        os.makedirs(folder, exist_ok=True)
        print_log(f'Downloading {url} to {path}', logger='current')
        torch.hub.download_url_to_file(url, path, progress=progress)
    if world_size > 1:
        barrier()
    return path


def load_from_http(url: str, map_location: Any = 'cpu') -> Any:
    path = download_checkpoint(url)
    try:
        return load_from_local(path, map_location)
    except CheckpointFileError as error:
        raise CheckpointFileError(f'{error} (downloaded from {url}; delete the cached file to '
                                  'download it again)') from error


def load_from_torchvision(name: str, map_location: Any = 'cpu') -> Any:
    from mmengine.runner.checkpoint import get_torchvision_models
    model = name.split('://', 1)[1]
    return load_from_http(get_torchvision_models()[model], map_location)


def _mmengine_home() -> str:
    # Where mmengine keeps open-mmlab:// files that are not URLs (as mmengine resolves it).
    cache = os.getenv('XDG_CACHE_HOME', osp.join('~', '.cache'))
    return osp.expanduser(os.getenv('MMENGINE_HOME', osp.join(cache, 'mmengine')))


def load_from_openmmlab(name: str, map_location: Any = 'cpu') -> Any:
    from mmengine.runner.checkpoint import get_deprecated_model_names, get_external_models
    model = name.split('://', 1)[1]
    model = get_deprecated_model_names().get(model, model)
    url = get_external_models()[model]
    if url.startswith(('http://', 'https://')):
        return load_from_http(url, map_location)
    return load_from_local(osp.join(_mmengine_home(), url), map_location)


def load_from_mmcls(name: str, map_location: Any = 'cpu') -> Any:
    from mmengine.runner.checkpoint import _process_mmcls_checkpoint, get_mmcls_models
    url = get_mmcls_models()[name[len('mmcls://'):]]
    return _process_mmcls_checkpoint(load_from_http(url, map_location))


def load_from_ceph(name: str, map_location: Any = 'cpu') -> Any:
    from mmengine.fileio import get_file_backend
    data = get_file_backend(name, backend_args={'backend': 'petrel'}).get(name)
    problem = bytes_problem(data[:16], len(data))
    if problem is not None:
        raise CheckpointFileError(f'{name}: {problem}.')
    with io.BytesIO(data) as buffer:
        return _torch_load(buffer, name, map_location)


def load_from_pavi(name: str, map_location: Any = None) -> Any:
    raise CheckpointFileError(
        f'{name}: pavi:// checkpoints are not loaded by sec_mm (its client hands over no file '
        'to check first); download the file and give its local path.')


#: mmengine's checkpoint schemes (``CheckpointLoader`` prefixes) and sec_mm's loader for each.
SCHEMES: Dict[str, Callable] = {
    '': load_from_local,
    'http://': load_from_http,
    'https://': load_from_http,
    'modelzoo://': load_from_torchvision,
    'torchvision://': load_from_torchvision,
    'open-mmlab://': load_from_openmmlab,
    'openmmlab://': load_from_openmmlab,
    'mmcls://': load_from_mmcls,
    r'(\S+\:)?s3://': load_from_ceph,
    r'(\S+\:)?petrel://': load_from_ceph,
    'pavi://': load_from_pavi,
}


def load_checkpoint(filename: str, map_location: Any = 'cpu') -> Any:
    """Load a checkpoint weights-only, from a local path or any of mmengine's schemes.

    Args:
        filename (str): A local path, ``http(s)://`` URL, ``torchvision://``,
            ``open-mmlab://``, ``mmcls://`` or ``s3://`` name.
        map_location: As for :func:`torch.load`. Defaults to ``'cpu'``.

    Raises:
        FileNotFoundError: No such local file.
        CheckpointFileError: The file is not a complete PyTorch checkpoint (empty, truncated,
            damaged, an HTML page, ...); the message gives its first bytes and size.
        UnsafeCheckpointError: The file names code or classes that weights-only loading does
            not allow; nothing of it was run.
    """
    for prefix in sorted(SCHEMES, reverse=True):  # longer prefixes first, as mmengine does
        if prefix and re.match(prefix, filename):
            return SCHEMES[prefix](filename, map_location)
    return load_from_local(filename, map_location)


def secure_checkpoint_loaders() -> None:
    """Put :data:`SCHEMES` behind mmengine's ``CheckpointLoader`` (idempotent), so that every
    load through mmengine (``load_from``, ``--resume``, ``Pretrained``, the inferencers, the
    codebases' test tools) is weights-only and checked first.

    A scheme mmengine has and sec_mm does not know is refused rather than left unsafe.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    for prefix, loader in SCHEMES.items():
        CheckpointLoader.register_scheme(prefixes=prefix, loader=loader, force=True)
    ours = set(SCHEMES.values()) | {load_from_unknown_scheme}
    for prefix, loader in list(CheckpointLoader._schemes.items()):
        if loader not in ours:
            print_log(f'sec_mm: checkpoint scheme {prefix!r} ({loader.__module__}.'
                      f'{loader.__name__}) is not weights-only; it is refused.',
                      logger='current', level=logging.WARNING)
            CheckpointLoader.register_scheme(prefixes=prefix, loader=load_from_unknown_scheme,
                                             force=True)


def load_from_unknown_scheme(name: str, map_location: Any = None) -> Any:
    raise CheckpointFileError(
        f'{name}: sec_mm has no weights-only loader for this scheme; download the file and '
        'give its local path.')
