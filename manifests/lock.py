"""One writer per output folder: an advisory lock that a second job is refused by, and that dies with its holder.

    with OutputLock(output, "curation"):     # raises OutputLocked naming the holder's host and pid
        ...

The lock is `fcntl.flock` on `OUTPUT/.lock`. The kernel releases it when the holding process ends
in any way (exit, crash, SIGKILL), so a stale lock is simply free: the next run takes it over, with
no guessing from pids. The file is never deleted (deleting it would let two runs lock two different
files); it holds the holder's host, pid and start time for the message a refused run prints.
flock works on local disks and on most shared filesystems (NFSv4, Lustre, GPFS with their lock
managers); on a filesystem without locks, acquiring fails loudly rather than silently sharing.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".lock"


class OutputLocked(RuntimeError):
    """Another live process holds the output folder; the message names it and what to do."""


class OutputLock:
    def __init__(self, folder: str | os.PathLike, what: str = "run"):
        self.path, self.what, self.fd = Path(folder) / LOCK_NAME, what, None

    def holder(self) -> dict:
        try:
            data = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def acquire(self) -> OutputLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputLocked(f"{self.path}: cannot lock ({err.strerror}); this filesystem may not support "
                                   "locks: give an --output on one that does") from err  # fmt: skip
            who = self.holder()
            since = f", started {who['started']}" if who.get("started") else ""
            raise OutputLocked(
                f"{self.path.parent} is in use by another {who.get('what', self.what)} (host "
                f"{who.get('host', '?')}, pid {who.get('pid', '?')}{since}); wait for it to finish or stop it, "
                "or give another output folder. A lock whose process has ended is taken over automatically."
            ) from None
        record = {"what": self.what, "host": socket.gethostname(), "pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
