"""Reading the small files operators and players name (transport files, filters, configs): bounded, regular files
only, and never waiting on a FIFO or a device (``O_NONBLOCK`` at open, then ``fstat`` refuses anything but a
regular file), so a bad path is an error and not a node stuck in its event loop."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


class UnreadableFileError(Exception):
    """Why a file could not be read; ``str()`` is the reason alone, callers name the file in their own terms."""

    def __init__(self, reason: str, *, not_regular: bool = False) -> None:
        super().__init__(reason)
        self.not_regular = not_regular


def read_regular_file(path: Path | str, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of the regular file ``path`` (one more than allowed, so the caller can tell a file
    that is too large); UnreadableFileError otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as error:
        raise UnreadableFileError(error.strerror or str(error)) from None
    except ValueError as error:  # a NUL in the name
        raise UnreadableFileError(str(error)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnreadableFileError("not a regular file", not_regular=True)
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read(limit + 1)
    except OSError as error:
        raise UnreadableFileError(error.strerror or str(error)) from None
    finally:
        os.close(fd)


def write_file_atomically(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = False) -> None:
    """``path`` holds ``data`` whole or keeps its old content: written to a fresh temporary file beside it (mkstemp:
    created here, 0600, never a file or symlink someone planted at a predictable name), given ``mode``, then renamed
    over ``path``. ``durable``: fsync before the rename (keys, whose loss loses a broadcast)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
