"""Which checkpoint ``--resume`` continues from: the newest complete one.

mmengine resumes from whatever the work dir's ``last_checkpoint`` names and stops with
torch's zip error when that file is truncated or corrupt (a run killed while writing it with
a writer that is not atomic, a full disk, a bad copy). Here the newest checkpoint that is
complete wins, and every newer one that is not is named with the reason.
"""
import os
import os.path as osp
import re
from typing import List, Optional, Sequence, Tuple

from sec_mm.checkpoint import checkpoint_problem

__all__ = ['DEFAULT_FILENAME_TMPLS', 'find_resumable_checkpoint']

# mmengine CheckpointHook's names for by-epoch and by-iteration checkpoints.
DEFAULT_FILENAME_TMPLS = ('epoch_{}.pth', 'iter_{}.pth')


def _step_patterns(filename_tmpls: Sequence[str]) -> List[re.Pattern]:
    return [re.compile('^' + re.escape(t).replace(r'\{\}', r'(\d+)') + '$')
            for t in filename_tmpls]


def find_resumable_checkpoint(
        work_dir: str, filename_tmpls: Sequence[str] = DEFAULT_FILENAME_TMPLS
) -> Tuple[Optional[str], List[Tuple[str, str]]]:
    """The newest complete checkpoint of a work dir, and the newer ones passed over.

    Candidates, newest first: the file ``work_dir/last_checkpoint`` names, then the files
    named by ``filename_tmpls`` in its folder (the work dir if ``last_checkpoint`` is
    missing), ordered by their epoch or iteration number.

    Args:
        work_dir: The training work dir.
        filename_tmpls: The CheckpointHook's ``filename_tmpl`` (or the two default ones).

    Returns:
        tuple: The checkpoint path (None if there is none) and ``(path, reason)`` for every
        newer candidate that is not complete.
    """
    candidates, folder = [], work_dir
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named:
            candidates.append(named)
            folder = osp.dirname(named) or work_dir
    patterns = _step_patterns(filename_tmpls)
    numbered = []
    if osp.isdir(folder):
        for name in os.listdir(folder):
            for pattern in patterns:
                match = pattern.match(name)
                if match:
                    numbered.append((int(match.group(1)), osp.join(folder, name)))
                    break
    candidates += [path for _, path in sorted(numbered, reverse=True)]

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
