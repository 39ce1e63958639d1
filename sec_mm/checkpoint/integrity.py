"""Whether a file is a complete checkpoint, read without unpickling anything."""
import os.path as osp
import zipfile
from typing import Optional

__all__ = ['checkpoint_problem']

_ZIP_MAGIC = b'PK\x03\x04'


def checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` is not a complete checkpoint file, or None if it is.

    A zip checkpoint (what ``torch.save`` writes) is complete when its central directory
    can be read and every member's CRC matches, which finds truncated files as well as
    damaged bytes (torch itself reads neither check). Files in torch's legacy format are
    only checked for being non-empty.
    """
    try:
        size = osp.getsize(path)
        with open(path, 'rb') as f:
            magic = f.read(len(_ZIP_MAGIC))
    except OSError as error:
        return f'cannot be read ({error.strerror or error})'
    if size == 0:
        return 'the file is empty (0 bytes)'
    if magic != _ZIP_MAGIC:
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f'incomplete: not a whole zip archive ({error}; {size} bytes)'
    if damaged is not None:
        return f'damaged: the CRC of its member {damaged!r} does not match'
    return None
