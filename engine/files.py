"""Files written whole or not at all: a temporary file beside the target, then a rename.

A reader sees the old file or the whole new one, never a part. Durability is a
separate step (:func:`fsync_path`, :func:`sync_files`), so a batch can write
many files and sync them together before it records them as written.
"""

import fcntl
import os
import re
import secrets
from pathlib import Path

#: The name :func:`write_atomic` gives its temporary file: ``.<name>.<12 hex digits>.tmp``.
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")


def fsync_path(path):
    """Sync a file or a folder (a folder holds its files' names) by path."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sync_files(directory, names):
    """Make files written with ``write_atomic(..., durable=False)`` durable: each file, then the folder
    (which holds their names)."""
    for name in names:
        fsync_path(Path(directory) / name)
    fsync_path(directory)


def write_atomic(path, data, durable=True):
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A process killed mid-write leaves at most a stray ``.<name>.<random>.tmp``
    file. The file gets the permissions a new file gets from ``open`` (the
    process's umask applies), whoever is to read it: a temporary file's
    owner-only mode would otherwise reach the target.

    Parameters
    ----------
    data : bytes-like, or an iterable of bytes-like pieces
        Pieces are written as they come (each may be reused once written).
    durable : bool
        Sync the file before the rename and the folder after it, so the new
        file survives a crash of the machine once this returns. Without it the
        rename is still atomic for readers, but a crash of the machine may
        leave the file empty or short: whoever records the file as written must
        first make it durable (:func:`sync_files`).

    See :class:`AtomicFile` to write the pieces as they are made.
    """
    pieces = (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data
    with AtomicFile(path, durable) as file:
        for piece in pieces:
            file.write(piece)
    return Path(path)


class AtomicFile:
    """A file of :func:`write_atomic`'s, written a piece at a time: :meth:`write` as the pieces
    come, then :meth:`commit` (the rename), or :meth:`discard`. As a context manager it
    commits when its block ends and discards when the block raises.
    """

    def __init__(self, path, durable=True):
        self.path = Path(path)
        self.durable = durable
        self.temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.tmp")   # see _TEMPORARY
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        self.file = os.fdopen(os.open(self.temporary, flags, 0o666), "wb")

    def write(self, piece):
        try:
            self.file.write(piece)
        except BaseException as error:
            self._failed(error)

    @property
    def closed(self):   # what a file-like writer (pyarrow's) looks for
        return self.file.closed

    def commit(self):
        """Flush (and sync, if durable) the file and rename it into place; returns the path."""
        try:
            self.file.flush()
            if self.durable:
                os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.temporary, self.path)
        except BaseException as error:
            self._failed(error)
        if self.durable:
            fsync_path(self.path.parent)
        return self.path

    def discard(self):
        """Drop the file: nothing was written at ``path``."""
        self.file.close()
        self.temporary.unlink(missing_ok=True)

    def _failed(self, error):
        self.discard()
        if isinstance(error, OSError) and error.filename is None:   # a failed write names no file
            raise OSError(error.errno, error.strerror, str(self.path)) from error
        raise error

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is None:
            self.commit()
        else:
            self.discard()


def remove_temporary_files(directory):
    """Remove what :func:`write_atomic` left in ``directory`` when its process was killed mid-write.

    Only for a folder no one else writes to now (hold its lock: :func:`take_lock`).
    Returns the names removed.
    """
    removed = []
    for path in Path(directory).iterdir():
        if _TEMPORARY.fullmatch(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def take_lock(path):
    """The file ``path`` (created if need be), open and exclusively locked; None when another
    process holds the lock. Closing the file (or the process ending) releases it."""
    file = open(path, "a+b")
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.close()
        return None
    return file
