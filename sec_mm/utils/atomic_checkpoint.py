"""Checkpoints that are never seen half-written.

mmengine writes a checkpoint in place (``open(path, 'wb').write(...)``), so a process killed
during the write leaves a truncated ``iter_N.pth`` under the final name, and its
``CheckpointHook`` deletes the oldest kept checkpoint *before* writing the new one. Here:

- :class:`AtomicLocalBackend` (file backend ``'atomic_local'``): ``put`` / ``put_text`` write
  a temporary file in the target's folder, flush and fsync it, and rename it over the target,
  so the target is either the old file or the complete new one.
- :class:`AtomicCheckpointHook`: mmengine's ``CheckpointHook`` (same arguments) that saves
  local checkpoints through that backend and removes old checkpoints only once the new one
  is complete. ``last_checkpoint`` is written after the checkpoint it names is complete.
"""
import os
import os.path as osp
import uuid
from typing import Union

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook

__all__ = ['ATOMIC_BACKEND', 'write_atomic', 'AtomicLocalBackend', 'AtomicCheckpointHook']

ATOMIC_BACKEND = 'atomic_local'
PART_SUFFIX = '.part'


def write_atomic(path: Union[str, os.PathLike], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or all of the new one.

    The data goes to a hidden ``.<name>.<random>.part`` file beside ``path``, is flushed and
    fsynced, and the file is renamed over ``path`` (atomic within a file system); the folder
    is fsynced so that the rename survives a crash. A failed write removes its temporary
    file; a killed one leaves it, hidden and never under the final name.
    """
    path = os.fspath(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    part = osp.join(folder, f'.{osp.basename(path)}.{uuid.uuid4().hex[:12]}{PART_SUFFIX}')
    # 0o666 minus the umask, as open() gives (tempfile.mkstemp would give 0o600).
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
    except BaseException:
        if osp.exists(part):
            os.remove(part)
        raise
    folder_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)


class AtomicLocalBackend(LocalBackend):
    """mmengine's ``LocalBackend`` with all-or-nothing writes (see :func:`write_atomic`).

    Registered as the file backend ``'atomic_local'``: ``backend_args=dict(backend=
    'atomic_local')`` selects it wherever mmengine takes ``backend_args``.
    """

    def put(self, obj: bytes, filepath: Union[str, os.PathLike]) -> None:
        write_atomic(filepath, obj)

    def put_text(self, obj: str, filepath: Union[str, os.PathLike],
                 encoding: str = 'utf-8') -> None:
        write_atomic(filepath, obj.encode(encoding))


class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` whose checkpoints are complete whenever they can be seen.

    Takes every argument of :class:`mmengine.hooks.CheckpointHook`. Differences:

    - Checkpoints in a local folder (the default, the work dir) are written with
      :class:`AtomicLocalBackend` unless ``backend_args`` / ``file_client_args`` choose a
      backend. A kill during a save leaves the previous checkpoints and ``last_checkpoint``
      as they were, plus at most one hidden ``.<name>.*.part`` file.
    - With ``max_keep_ckpts``, the oldest checkpoint is removed after the new one is saved,
      not before: a kill during the save still leaves ``max_keep_ckpts`` complete ones.
    """

    def __init__(self, *args, max_keep_ckpts: int = -1, **kwargs) -> None:
        # mmengine removes the oldest kept checkpoint when its list is full, before saving.
        # Letting it keep one more means it never has to; the extra one is removed in
        # _save_checkpoint_with_step once the new checkpoint is complete.
        super().__init__(*args, max_keep_ckpts=max_keep_ckpts + 1 if max_keep_ckpts > 0
                         else max_keep_ckpts, **kwargs)
        self.keep_after_save = max_keep_ckpts

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if (self.backend_args is None and self.file_client_args is None
                and type(self.file_backend) is LocalBackend):
            self.backend_args = dict(backend=ATOMIC_BACKEND)
            self.file_backend = AtomicLocalBackend()

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        super()._save_checkpoint_with_step(runner, step, meta)
        if self.keep_after_save <= 0:
            return
        while len(self.keep_ckpt_ids) > self.keep_after_save:
            old = self.keep_ckpt_ids.popleft()
            if not is_main_process():
                continue
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # deepspeed saves folders
                self.file_backend.rmtree(path)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
