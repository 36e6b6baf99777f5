"""Files written whole or not at all: a temporary file beside the target, then a rename.

A reader sees the old file or the whole new one, never a part. Durability is a
separate step (:func:`fsync_path`, :func:`sync_files`), so a batch can write
many files and sync them together before it records them as written.
"""

import os
import secrets
from pathlib import Path


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
    """
    path = Path(path)
    pieces = (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            for piece in pieces:
                file.write(piece)
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if durable:
        fsync_path(path.parent)
    return path
