"""One process per run directory: an exclusive OS lock, released when its holder dies."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from smto.errors import RunStateError

LOCK = ".lock"

if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(handle: IO[str], wait: bool) -> bool:
        mode = msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK
        try:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), mode, 1)
        except OSError:
            return False
        return True

else:
    import fcntl

    def _try_lock(handle: IO[str], wait: bool) -> bool:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True


class RunLock:
    """Holds ``directory/.lock`` exclusively while a run trains there.

    A second process gets a :class:`RunStateError` naming the holder (process id, host, since
    when), or, with ``wait``, blocks until the holder is done. The OS releases the lock when
    the holder exits or is killed, so a dead run never blocks its own resume.
    """

    def __init__(self, directory: Path, wait: bool = False) -> None:
        self.path = Path(directory) / LOCK
        self.wait = wait
        self._handle: IO[str] | None = None

    def __enter__(self) -> RunLock:
        handle = open(self.path, "a+")
        try:
            if not _try_lock(handle, wait=False):
                if not self.wait:
                    raise RunStateError(
                        f"the run directory {self.path.parent} is in use by {_holder(handle)}: "
                        "wait for it to finish (--wait waits for it), or train elsewhere"
                    )
                _try_lock(handle, wait=True)
        except BaseException:
            handle.close()
            raise
        handle.seek(0)
        handle.truncate()
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the lock
            self._handle = None


def _holder(handle: IO[str]) -> str:
    """Who holds the lock, as its holder wrote it (or "another process" while it writes)."""
    handle.seek(0)
    try:
        info = json.loads(handle.read())
        return f"process {info['pid']} on {info['host']} (since {info['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"
