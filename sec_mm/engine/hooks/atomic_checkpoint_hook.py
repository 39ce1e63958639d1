"""Checkpoints that are never seen half-written.

mmengine's ``CheckpointHook`` writes a checkpoint in place, so a process killed during the write
leaves a truncated ``iter_N.pth`` under the final name, and it deletes the oldest kept
checkpoint *before* writing the new one. :class:`AtomicCheckpointHook` (same arguments) saves
local checkpoints through :class:`~sec_mm.engine.atomic_backend.AtomicLocalBackend` and removes
old checkpoints only once the new one is complete; ``last_checkpoint`` is written after the
checkpoint it names is complete.
"""
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook

from ..atomic_backend import ATOMIC_BACKEND, AtomicLocalBackend

__all__ = ['AtomicCheckpointHook']


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
