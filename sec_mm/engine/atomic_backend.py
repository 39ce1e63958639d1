"""All-or-nothing file writes, and an mmengine file backend that uses them.

mmengine's ``LocalBackend`` writes in place (``open(path, 'wb').write(...)``), so a process
killed during the write leaves a truncated file under the final name.
"""
import os
import os.path as osp
import uuid
from typing import Union

from mmengine.fileio import LocalBackend

__all__ = ['ATOMIC_BACKEND', 'PART_SUFFIX', 'write_atomic', 'AtomicLocalBackend']

ATOMIC_BACKEND = 'atomic_local'
PART_SUFFIX = '.part'


def write_atomic(path: Union[str, os.PathLike], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or all of the new one.

    The data goes to a hidden ``.<name>.<random>.part`` file beside ``path``, is flushed and
    fsynced, and the file is renamed over ``path`` (atomic within a file system); the folder
    is fsynced so that the rename survives a crash. A failed write removes its temporary
    file; a killed one leaves it, hidden and never under the final name.

    Raises:
        OSError: The write failed (a full disk, ...); the message names ``path``.
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
    except BaseException as error:
        if osp.exists(part):
            os.remove(part)
        if isinstance(error, OSError) and error.filename is None and error.errno:
            # torch and mmengine name no file; "No space left on device" alone says nothing
            # about where.
            raise OSError(error.errno, f'{error.strerror} (writing {len(data)} bytes)',
                          path) from error
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
