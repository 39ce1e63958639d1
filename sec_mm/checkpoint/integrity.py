"""Whether a file is a complete PyTorch checkpoint, read without unpickling anything."""
import os.path as osp
import zipfile
from typing import Optional

__all__ = ['checkpoint_problem', 'bytes_problem']

# What torch.save writes: a zip archive, or (``_use_new_zipfile_serialization=False``) the
# legacy format, a pickle that starts with torch's magic number (protocol 2, LONG1 of 10 bytes).
_ZIP_MAGIC = b'PK\x03\x04'
_LEGACY_MAGIC = b'\x80\x02\x8a\x0a' + (0x1950a86a20f9469cfc6c).to_bytes(10, 'little')
_HEAD = 16  # bytes shown of a file that is not a checkpoint


def _not_a_checkpoint(head: bytes, size: int) -> str:
    """The message for a file that is neither of torch's formats, with a guess at what it is."""
    text = head.lstrip().lower()
    if text.startswith((b'<!doctype html', b'<html', b'<head', b'<?xml')):
        guess = 'an HTML/XML page, what a failed or redirected download saves'
    elif text.startswith((b'{', b'[')):
        guess = 'JSON or other text'
    elif all(32 <= b < 127 or b in b'\t\r\n' for b in head):
        guess = 'text'
    else:
        guess = 'another binary format'
    return (f'not a PyTorch checkpoint: it starts with {head[:_HEAD]!r} ({size} bytes; looks '
            f'like {guess}), where torch.save writes a zip archive (PK\\x03\\x04)')


def bytes_problem(head: bytes, size: int) -> Optional[str]:
    """Why a file whose first bytes are ``head`` cannot be a checkpoint, or None.

    Only the format is checked (for data that is not a local file, e.g. an object store's
    bytes); :func:`checkpoint_problem` also checks a zip archive's completeness.
    """
    if size == 0:
        return 'the file is empty (0 bytes)'
    if head.startswith((_ZIP_MAGIC, _LEGACY_MAGIC)):
        return None
    return _not_a_checkpoint(head, size)


def checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` is not a complete checkpoint file, or None if it is.

    A zip checkpoint (what ``torch.save`` writes) is complete when its central directory
    can be read and every member's CRC matches, which finds truncated files as well as
    damaged bytes (torch itself reads neither check). A file in torch's legacy format is
    recognised by its magic number. Anything else (an HTML error page saved as ``.pth``,
    text, an empty file) is named with its first bytes and size.
    """
    try:
        size = osp.getsize(path)
        with open(path, 'rb') as f:
            head = f.read(max(_HEAD, len(_LEGACY_MAGIC)))
    except OSError as error:
        return f'cannot be read ({error.strerror or error})'
    problem = bytes_problem(head, size)
    if problem is not None or not head.startswith(_ZIP_MAGIC):
        return problem
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f'incomplete: not a whole zip archive ({error}; {size} bytes)'
    if damaged is not None:
        return f'damaged: the CRC of its member {damaged!r} does not match'
    return None
