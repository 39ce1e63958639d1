"""Checkpoints that are never seen half-written.

mmengine's ``CheckpointHook`` writes a checkpoint in place, so a process killed during the write
leaves a truncated ``iter_N.pth`` under the final name, and it deletes the oldest kept
checkpoint *before* writing the new one. :class:`AtomicCheckpointHook` (same arguments) saves
local checkpoints through :class:`~sec_mm.engine.atomic_backend.AtomicLocalBackend` and removes
old checkpoints only once the new one is complete; ``last_checkpoint`` is written after the
checkpoint it names is complete.
"""
import datetime
import difflib
import inspect
import logging
import os
import os.path as osp
import re

import numpy as np
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log

from ..atomic_backend import ATOMIC_BACKEND, PART_SUFFIX, AtomicLocalBackend

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
    - No checkpoint the run did not write is overwritten: a file already under the name of
      a new checkpoint (a run resumed from an older checkpoint than the newest) is renamed to
      ``<name>.before-<time>.<ext>`` first, with a warning. Only checkpoints of this run (and
      of the runs it resumes) are removed by ``max_keep_ckpts``.
    - Hidden ``.part`` files of saves that were killed are removed when training starts (the
      run holds the work dir's lock, so no other run of ours is writing them).
    - numpy scalars in the message hub become Python numbers, so the checkpoint loads
      weights-only on every torch version.
    - An unknown argument (a typo such as ``intervl=1``) is an error when the hook is built,
      not at the first save.
    """

    def __init__(self, *args, max_keep_ckpts: int = -1, **kwargs) -> None:
        # Extra keyword arguments go to Runner.save_checkpoint at every save; the hook passes
        # all of that method's options itself, so any other one is a mistake.
        saved = set(inspect.signature(CheckpointHook.__init__).parameters)
        unknown = sorted(set(kwargs) - saved)
        if unknown:
            hints = [f'{k!r} (did you mean {difflib.get_close_matches(k, saved, 1)[0]!r}?)'
                     if difflib.get_close_matches(k, saved, 1) else repr(k) for k in unknown]
            raise TypeError(
                f'default_hooks.checkpoint got unknown argument(s) {", ".join(hints)}; '
                f'CheckpointHook takes {", ".join(sorted(saved - {"self", "kwargs"}))}.')
        # mmengine removes the oldest kept checkpoint when its list is full, before saving.
        # Letting it keep one more means it never has to; the extra one is removed in
        # _save_checkpoint_with_step once the new checkpoint is complete.
        super().__init__(*args, max_keep_ckpts=max_keep_ckpts + 1 if max_keep_ckpts > 0
                         else max_keep_ckpts, **kwargs)
        self.keep_after_save = max_keep_ckpts
        self._written = set()

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if (self.backend_args is None and self.file_client_args is None
                and type(self.file_backend) is LocalBackend):
            self.backend_args = dict(backend=ATOMIC_BACKEND)
            self.file_backend = AtomicLocalBackend()
        if isinstance(self.file_backend, LocalBackend) and is_main_process():
            self._remove_killed_saves(runner)

    def _remove_killed_saves(self, runner) -> None:
        folders = {osp.abspath(self.out_dir), osp.abspath(runner.work_dir)}
        pattern = re.compile(r'^\..+\.[0-9a-f]{12}' + re.escape(PART_SUFFIX) + '$')
        for folder in folders:
            if not osp.isdir(folder):
                continue
            for name in sorted(os.listdir(folder)):
                if pattern.match(name):
                    os.remove(osp.join(folder, name))
                    print_log(f'Removed {osp.join(folder, name)}, left by a save that was '
                              'killed.', logger='current', level=logging.WARNING)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        hub = checkpoint.get('message_hub')
        if isinstance(hub, dict) and isinstance(hub.get('runtime_info'), dict):
            hub['runtime_info'] = {
                k: v.item() if isinstance(v, np.generic) else v
                for k, v in hub['runtime_info'].items()}

    def _move_aside(self, step) -> None:
        """Rename a file already under the name of checkpoint ``step`` that this process did
        not write. (A resumed run saves only steps after the one it resumed from, so such a
        file is never one of the checkpoints it continues.)"""
        path = osp.join(self.out_dir, self.filename_tmpl.format(step))
        if path in self._written:
            return
        self._written.add(path)
        if not osp.exists(path):
            return
        stem, ext = osp.splitext(path)
        aside = f'{stem}.before-{datetime.datetime.now():%Y%m%d-%H%M%S}{ext}'
        os.replace(path, aside)
        print_log(f'{path} exists and was not written by this run (resumed from an older '
                  f'checkpoint?); it is kept as {aside}.', logger='current',
                  level=logging.WARNING)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if is_main_process() and isinstance(self.file_backend, LocalBackend):
            self._move_aside(step)
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
