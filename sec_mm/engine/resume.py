"""Which checkpoint ``--resume`` continues from: the newest complete one.

mmengine resumes from whatever the work dir's ``last_checkpoint`` names (an absolute path, so
a moved work dir resumes from the old place, or from nothing) and stops with torch's zip error
when that file is truncated or corrupt (a run killed while writing it with a writer that is
not atomic, a full disk, a bad copy). Here the checkpoints of the work dir given are the
candidates, the newest complete one wins, and every newer one that is not is named with the
reason.
"""
import os
import os.path as osp
import re
from typing import List, Optional, Sequence, Tuple

from sec_mm.checkpoint import checkpoint_problem

__all__ = ['DEFAULT_FILENAME_TMPLS', 'checkpoint_dir', 'list_checkpoints',
           'find_resumable_checkpoint']

# mmengine CheckpointHook's names for by-epoch and by-iteration checkpoints.
DEFAULT_FILENAME_TMPLS = ('epoch_{}.pth', 'iter_{}.pth')


def _step_patterns(filename_tmpls: Sequence[str]) -> List[re.Pattern]:
    return [re.compile('^' + re.escape(t).replace(r'\{\}', r'(\d+)') + '$')
            for t in filename_tmpls]


def checkpoint_dir(work_dir: str, out_dir: Optional[str] = None) -> str:
    """Where a ``CheckpointHook`` with ``out_dir`` saves: as mmengine computes it, the work dir
    itself, or ``out_dir/<the work dir's last folder name>``."""
    if out_dir is None or osp.abspath(out_dir) == osp.abspath(work_dir):
        return work_dir
    return osp.join(out_dir, osp.basename(work_dir.rstrip(osp.sep)))


def list_checkpoints(folder: str, filename_tmpls: Sequence[str] = DEFAULT_FILENAME_TMPLS
                     ) -> List[Tuple[int, str]]:
    """``(step, path)`` of the files in ``folder`` named by ``filename_tmpls``, newest first."""
    patterns = _step_patterns(filename_tmpls)
    numbered = []
    if osp.isdir(folder):
        for name in os.listdir(folder):
            for pattern in patterns:
                match = pattern.match(name)
                if match:
                    numbered.append((int(match.group(1)), osp.join(folder, name)))
                    break
    return sorted(numbered, reverse=True)


def find_resumable_checkpoint(
        work_dir: str, filename_tmpls: Sequence[str] = DEFAULT_FILENAME_TMPLS,
        out_dir: Optional[str] = None) -> Tuple[Optional[str], List[Tuple[str, str]]]:
    """The newest complete checkpoint of a work dir, and the newer ones passed over.

    The work dir given is the truth, wherever it was when the checkpoints were written:
    ``work_dir/last_checkpoint`` names the newest checkpoint by its path at the time (mmengine
    writes it absolute), so only its file name is used, looked up in the checkpoint folder of
    this work dir. Candidates, newest first: that file, then the files named by
    ``filename_tmpls`` there, by their epoch or iteration number.

    Args:
        work_dir: The training work dir.
        filename_tmpls: The CheckpointHook's ``filename_tmpl`` (or the two default ones).
        out_dir: The CheckpointHook's ``out_dir``, if it has one.

    Returns:
        tuple: The checkpoint path (None if there is none) and ``(path, reason)`` for every
        newer candidate that is not complete.
    """
    folder = checkpoint_dir(work_dir, out_dir)
    candidates = []
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named:
            candidates.append(osp.join(folder, osp.basename(named)))
    candidates += [path for _, path in list_checkpoints(folder, filename_tmpls)]

    skipped, seen = [], set()
    for path in candidates:
        if osp.abspath(path) in seen:
            continue
        seen.add(osp.abspath(path))
        problem = (checkpoint_problem(path) if osp.exists(path) else
                   'named by last_checkpoint but does not exist')
        if problem is None:
            return path, skipped
        skipped.append((path, problem))
    return None, skipped
