"""A run folder belongs to one process at a time.

:func:`owning` takes an operating-system lock on ``<folder>/.lock`` (``flock`` on Linux and macOS, ``msvcrt`` on
Windows) for as long as a process trains or writes results there. The lock dies with its process, so a killed run
never leaves a folder stuck; a second process that asks for a held folder gets :class:`RunFolderBusyError` at once,
before it loads data or builds a model. Within one process the lock is re-entrant (``train_run`` around ``fit``
takes it once). The lock file is removed when the folder is released, and a folder it created stays only if something
was written into it, so a refused run leaves nothing behind.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

try:  # POSIX
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
except ImportError:  # Windows
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

LOCK_FILE = ".lock"
_held: dict[str, list[int]] = {}  # resolved folder -> [file descriptor, depth] of the locks this process holds


class RunFolderBusyError(RuntimeError):
    """Another process is training or writing in this run folder (or the path is a file, not a folder)."""


@contextmanager
def owning(folder: Union[str, Path]) -> Iterator[Path]:
    """Hold ``folder`` (created if missing) for this process for the duration of the ``with`` block.

    Raises:
        RunFolderBusyError: another live process holds it (the message names its process id and the fix).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderBusyError(f"{folder} is a file, not a folder; give the run a folder (output_dir=...).")
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    if key in _held:
        _held[key][1] += 1
        try:
            yield folder
        finally:
            _held[key][1] -= 1
        return
    path = folder / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderBusyError(f"{folder} is in use by another process (pid {holder}); wait for it to finish, "
                                     "or give this run another output folder (output_dir=...).")
        if _same_file(fd, path):
            break
        _unlock(fd)  # the holder removed this lock file as we opened it: take the new one
        os.close(fd)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, str(os.getpid()).encode())
    _held[key] = [fd, 1]
    try:
        yield folder
    finally:
        del _held[key]
        try:  # leave the folder as it was: remove the lock file while still holding it
            path.unlink()
        except OSError:
            pass
        _unlock(fd)
        os.close(fd)
        for made in created:  # folders this call made and nothing was written into (e.g. the run was refused)
            try:
                made.rmdir()
            except OSError:
                break


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False
