"""Distributed set-up that works the same on GPUs and on CPU-only machines.

mmengine assumes CUDA when it starts a distributed run: ``init_dist`` calls
``torch.cuda.set_device``, the default model wrapper passes ``device_ids=[LOCAL_RANK]`` to
DDP, and ``SyncBN`` (the stock mmseg norm) only runs on GPUs. These helpers pick the backend
from the hardware (nccl with CUDA, gloo without) and adapt a config so that the same config
and the same command run on both.
"""
import copy
import glob
import os
import shutil
import subprocess
from datetime import timedelta
from typing import Any, List, Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.logging import print_log

__all__ = [
    'LAUNCHERS', 'accelerator_available', 'cuda_available', 'visible_nvidia_gpus', 'check_gpus_usable',
    'select_dist_backend', 'init_distributed', 'revert_sync_bn_cfg', 'adapt_cfg_to_device'
]

LAUNCHERS = ('none', 'pytorch', 'slurm')
# Norm types that synchronise over processes and need CUDA tensors.
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN', 'SyncBatchNorm', 'nn.SyncBatchNorm')


def accelerator_available() -> bool:
    """Whether mmengine finds an accelerator (GPU, NPU, MLU, MUSA): its ``AmpOptimWrapper``
    runs only there."""
    from mmengine.device import get_device
    return get_device() != 'cpu'


def cuda_available() -> bool:
    """Whether this process will run on CUDA devices."""
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def visible_nvidia_gpus() -> List[str]:
    """NVIDIA GPUs this process is meant to see, whether or not torch can use them.

    Read from ``nvidia-smi -L`` (else the ``/dev/nvidiaN`` device files); empty when
    ``CUDA_VISIBLE_DEVICES`` hides every GPU (``''`` or ``-1``), which is how a user asks for
    CPU on a GPU machine.
    """
    if os.environ.get('CUDA_VISIBLE_DEVICES', None) in ('', '-1'):
        return []
    smi = shutil.which('nvidia-smi')
    if smi is not None:
        try:
            listing = subprocess.run([smi, '-L'], capture_output=True, text=True, timeout=20)
            gpus = [line for line in listing.stdout.splitlines() if line.startswith('GPU ')]
            if gpus:
                return gpus
        except (OSError, subprocess.TimeoutExpired):
            pass
    return sorted(glob.glob('/dev/nvidia[0-9]*'))


def check_gpus_usable(force_cpu: bool = False) -> None:
    """Stop when NVIDIA GPUs are visible but torch cannot use them.

    Otherwise ``dist_train.sh CONFIG 8`` on such a machine (a CPU-only torch build, or a
    driver older than the CUDA of the torch build) would quietly start 8 CPU processes.

    Args:
        force_cpu (bool): Run on CPU anyway (``--force-cpu``).

    Raises:
        RuntimeError: naming the GPUs, why torch cannot use them, and the fixes.
    """
    if force_cpu or cuda_available():
        return
    gpus = visible_nvidia_gpus()
    if not gpus:
        return
    if torch.version.cuda is None:
        why = f'this torch ({torch.__version__}) is a CPU-only build'
        fix = 'install a CUDA build of torch that matches your driver'
    else:
        why = (f'this torch ({torch.__version__}) is built for CUDA {torch.version.cuda} and '
               'finds no usable GPU: most often the NVIDIA driver is older than that CUDA '
               'needs (compare the "CUDA Version" nvidia-smi prints)')
        fix = 'update the driver or install a torch built for an older CUDA'
    raise RuntimeError(
        f'{len(gpus)} NVIDIA GPU(s) are visible ({gpus[0]}{", ..." if len(gpus) > 1 else ""}) '
        f'but torch.cuda.is_available() is False: {why}. Fix: {fix}. To run on CPU anyway, '
        'pass --force-cpu (or hide the GPUs with CUDA_VISIBLE_DEVICES=).')


def select_dist_backend() -> str:
    """``'nccl'`` where CUDA and NCCL are there, ``'gloo'`` otherwise."""
    if cuda_available() and torch_dist.is_nccl_available():
        return 'nccl'
    return 'gloo'


def _slurm_env() -> None:
    """Fill torch.distributed's env variables from SLURM's, as mmengine does for GPUs."""
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        nodes = os.environ['SLURM_NODELIST']
        os.environ['MASTER_ADDR'] = subprocess.getoutput(
            f'scontrol show hostname {nodes} | head -n1')


def init_distributed(launcher: str, backend: Optional[str] = None,
                     timeout: Optional[float] = 1800) -> bool:
    """Create the process group on machines without CUDA.

    With CUDA nothing happens here: mmengine's Runner calls its own ``init_dist`` (which also
    binds every process to its GPU) with the backend from ``env_cfg.dist_cfg``. Without CUDA
    that function would fail in ``torch.cuda.set_device``, so the group is made here first and
    the Runner, seeing it initialised, uses it.

    Args:
        launcher: ``'none'``, ``'pytorch'`` (torchrun) or ``'slurm'``.
        backend: Defaults to :func:`select_dist_backend`.
        timeout: Seconds a collective may wait.

    Returns:
        bool: Whether a process group was created here.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f'Unknown launcher {launcher!r}; choose one of {LAUNCHERS}.')
    if launcher == 'none' or torch_dist.is_initialized() or cuda_available():
        return False
    if launcher == 'slurm':
        _slurm_env()
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
               if k not in os.environ]
    if missing:
        raise RuntimeError(
            f'--launcher {launcher} needs the environment variables {missing}; start the '
            'script through tools/dist_train.sh / torchrun (or srun for slurm).')
    torch_dist.init_process_group(
        backend=backend or select_dist_backend(),
        rank=int(os.environ['RANK']),
        world_size=int(os.environ['WORLD_SIZE']),
        timeout=timedelta(seconds=timeout) if timeout else None)
    return True


def revert_sync_bn_cfg(node: Any) -> int:
    """Turn every SyncBN-like norm config inside ``node`` into ``BN``, in place.

    Returns:
        int: How many norm configs were changed.
    """
    changed = 0
    if isinstance(node, dict):
        norm_type = node.get('type')
        if (isinstance(norm_type, str) and norm_type in SYNC_BN_TYPES) or \
                norm_type is torch.nn.SyncBatchNorm:
            node['type'] = 'BN'
            changed += 1
        for value in node.values():
            changed += revert_sync_bn_cfg(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            changed += revert_sync_bn_cfg(value)
    return changed


def adapt_cfg_to_device(cfg: Config, launcher: str) -> Config:
    """Make a config run on the hardware at hand (in place; also returned).

    - ``env_cfg.dist_cfg.backend`` becomes :func:`select_dist_backend`.
    - Without CUDA: ``SyncBN`` norms become ``BN`` (SyncBN needs GPUs) and ``cfg.sync_bn`` is
      dropped; a config's ``AmpOptimWrapper`` (the dense recipes train in fp16) becomes the
      bfloat16 ``CPUAmpOptimWrapper`` (mmengine's needs an accelerator, and CPU float16 is
      slow); when distributed, DDP wraps the CPU model with ``device_ids=None``.

    On CUDA machines only the backend is set, so GPU runs behave exactly as before.
    """
    cfg.setdefault('env_cfg', dict())
    cfg.env_cfg.setdefault('dist_cfg', dict())
    cfg.env_cfg.dist_cfg['backend'] = select_dist_backend()
    if cuda_available():
        return cfg

    reverted = sum(revert_sync_bn_cfg(cfg.get(key))
                   for key in ('model', 'tta_model') if cfg.get(key) is not None)
    if reverted:
        print_log(f'No CUDA: {reverted} SyncBN norm config(s) run as BN.', logger='current')
    if cfg.get('sync_bn') is not None:
        print_log(f'No CUDA: sync_bn={cfg.sync_bn!r} is ignored.', logger='current')
        cfg.sync_bn = None
    wrapper = cfg.get('optim_wrapper')
    if isinstance(wrapper, dict) and wrapper.get('type') == 'AmpOptimWrapper':
        if not accelerator_available():
            wrapper['type'] = 'CPUAmpOptimWrapper'
            if wrapper.get('dtype') in (None, 'float16', torch.float16):
                wrapper['dtype'] = 'bfloat16'
            wrapper.pop('loss_scale', None)  # bfloat16 needs no loss scaling
            print_log(f"No accelerator: the config's AmpOptimWrapper runs as CPUAmpOptimWrapper "
                      f"({wrapper['dtype']}).", logger='current')

    if launcher != 'none':
        from mmengine.registry import MODEL_WRAPPERS
        from torch.nn.parallel import DistributedDataParallel
        wrapper = copy.deepcopy(cfg.get('model_wrapper_cfg')) or dict(
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        wrapper.setdefault('type', 'MMDistributedDataParallel')
        wrapper_cls = (wrapper['type'] if isinstance(wrapper['type'], type) else
                       MODEL_WRAPPERS.get(wrapper['type']))
        if wrapper_cls is not None and issubclass(wrapper_cls, DistributedDataParallel):
            wrapper['device_ids'] = None  # CPU modules: DDP must not be given devices
        cfg.model_wrapper_cfg = wrapper
    return cfg
