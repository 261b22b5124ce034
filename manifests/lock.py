"""One writer per output folder: an advisory lock that a second job is refused by, and that dies with its holder.

    with OutputLock(output, "curation"):     # raises OutputLocked naming the holder's host and pid
        ...

The lock is `fcntl.flock` on `OUTPUT/.lock`. The kernel releases it when the holding process ends
in any way (exit, crash, SIGKILL), so a stale lock is simply free: the next run takes it over, with
no guessing from pids. The file is never deleted (deleting it would let two runs lock two different
files); it holds the holder's host, pid and start time for the message a refused run prints.
flock works on local disks and on most shared filesystems (NFSv4, Lustre, GPFS with their lock
managers); on a filesystem without locks, acquiring fails loudly rather than silently sharing.

An object store (s3://, gs://) has no locks, so there the lock is a lease: the object `OUTPUT/.lock`
names its holder and an expiry that the holder renews every LEASE_S/4 seconds from a thread. A run
is refused while a lease it does not own is unexpired; a lease whose holder died (killed, crashed)
expires after LEASE_S seconds (env MASK2DIT_LEASE_S, default 120) and is then taken over. Two runs
starting within the same second can both write a lease; each reads it back and only the one whose
lease is there goes on.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
import uuid

from manifests.store import ObjectPath, location, within

LOCK_NAME = ".lock"


def lease_seconds() -> float:
    return float(os.environ.get("MASK2DIT_LEASE_S", "120"))


class OutputLocked(RuntimeError):
    """Another live process holds the output folder; the message names it and what to do."""


class OutputLockLost(OutputLocked):
    """The lock was lost while its job ran (the lock file deleted, the lease not renewed in time): the
    job stops before its next write, so two jobs never write one output."""


_HELD: dict[str, OutputLock] = {}  # output folder -> the lock this process holds on it


def _key(folder) -> str:
    return str(location(folder)).rstrip("/") + "/"


def check_writes(path) -> None:
    """Fencing: before a write to `path`, the lock of the output it lies in, when this process holds
    one, must still be held (OutputLockLost otherwise). Paths outside held outputs pass."""
    if not _HELD:
        return
    where = location(path)
    text = str(where)
    for folder, lock in list(_HELD.items()):
        if text.startswith(folder):
            lock.check()
            parent = os.path.dirname(text) or "."
            if lock.resolved is not None and not within(lock.resolved, parent):  # no link leads a write out
                raise OutputLocked(f"{parent} leads out of the output folder {folder.rstrip('/')} (to "
                                   f"{os.path.realpath(parent)}, through a symbolic link); nothing is written through "
                                   "it: remove the link")  # fmt: skip


class OutputLock:
    def __init__(self, folder: str | os.PathLike, what: str = "run"):
        self.path, self.what, self.fd = location(folder) / LOCK_NAME, what, None
        self.resolved = None  # the local output folder, links resolved (at acquire)
        self._lease: _Lease | None = None

    def holder(self) -> dict:
        try:
            data = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def acquire(self) -> OutputLock:
        if isinstance(self.path, ObjectPath):
            self._lease = _Lease(self.path, self.what, self.holder).acquire()
            _HELD.setdefault(_key(self.path.parent), self)
            return self
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:  # never through a link: one planted at the lock's path could point anywhere
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as err:
            if err.errno != errno.ELOOP:
                raise
            raise OutputLocked(f"{self.path} is a symbolic link; the lock is never written through one (it could "
                               "point outside the output folder): delete the link and re-run") from None  # fmt: skip
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputLocked(f"{self.path}: cannot lock ({err.strerror}); this filesystem may not support "
                                   "locks: give an --output on one that does") from err  # fmt: skip
            raise _locked(self.path, self.holder(), self.what, "A lock whose process has ended is taken over "
                          "automatically.") from None  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_record(self.what)).encode(), 0)
        self.fd = fd
        self.resolved = self.path.parent.resolve()
        _HELD.setdefault(_key(self.path.parent), self)
        return self

    def check(self) -> None:
        """Raise OutputLockLost unless this process still holds the lock: locally, the lock file is still
        the one it locked (not deleted or replaced); on an object store, its lease was renewed recently
        enough that it cannot have expired. Every write under the output checks this first."""
        if self._lease is not None:
            self._lease.check()
            return
        if self.fd is None:
            return
        try:
            now = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            now = None
        held = os.fstat(self.fd)
        if now is None or (now.st_ino, now.st_dev) != (held.st_ino, held.st_dev):
            raise OutputLockLost(
                f"{self.path} was deleted or replaced while this {self.what} held it, so another job may now be "
                f"writing to {self.path.parent}; stopped before writing more. Make sure no other job uses the "
                "folder, then re-run the same command (it resumes)"
            )

    def release(self) -> None:
        if _HELD.get(_key(self.path.parent)) is self:
            del _HELD[_key(self.path.parent)]
        if self._lease is not None:
            self._lease.release()
            self._lease = None
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


def _record(what: str) -> dict:
    return {"what": what, "host": socket.gethostname(), "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip


def _locked(path, who: dict, what: str, takeover: str) -> OutputLocked:
    since = f", started {who['started']}" if who.get("started") else ""
    return OutputLocked(
        f"{path.parent} is in use by another {who.get('what', what)} (host {who.get('host', '?')}, pid "
        f"{who.get('pid', '?')}{since}); wait for it to finish or stop it, or give another output folder. {takeover}"
    )


class _Lease:
    """The lock on an object store: a renewed lease object (see the module docstring)."""

    def __init__(self, path: ObjectPath, what: str, holder):
        self.path, self.what, self.holder = path, what, holder
        self.token = uuid.uuid4().hex
        self.record = _record(what) | {"token": self.token}
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.renewed = 0.0  # time of the last lease written

    def _write(self) -> None:
        written = time.time()
        self.path.write_bytes(json.dumps(self.record | {"expires": written + lease_seconds()}).encode())
        self.renewed = written

    def check(self) -> None:
        """The lease was last renewed within 3/4 of its length: it cannot have expired, so no other job
        can hold it. Past that (renewals failing), the job stops before the lease can expire."""
        age = time.time() - self.renewed
        if age > 0.75 * lease_seconds():
            raise OutputLockLost(
                f"the lease {self.path} was last renewed {age:.0f} s ago (it expires after {lease_seconds():.0f} s), "
                "so another job could take this output; stopped before writing more. Check the store's "
                "reachability and credentials, then re-run the same command (it resumes)"
            )

    def acquire(self) -> _Lease:
        who = self.holder()
        if who and who.get("token") != self.token and float(who.get("expires", 0)) > time.time():
            raise _locked(self.path, who, self.what, f"Its lease (on an object store) expires by itself "
                          f"{lease_seconds():.0f} s after its holder stops; or delete {self.path} if no run is "
                          "using this output.")  # fmt: skip
        try:
            self._write()
        except OSError as err:  # a read-only key or bucket, a missing permission: said in one line
            raise OutputLocked(f"{self.path}: cannot write the output's lease ({type(err).__name__}: {err}); the "
                               "output must be writable with these credentials: give a writable --output, or "
                               "credentials that may write there") from None  # fmt: skip
        time.sleep(min(1.0, lease_seconds() / 20))  # a rival that wrote at the same moment shows now
        who = self.holder()
        if who.get("token") != self.token:
            raise _locked(self.path, who, self.what, "It took the lease at the same moment as this run.")
        self.thread = threading.Thread(target=self._renew, name="output-lease", daemon=True)
        self.thread.start()
        return self

    def _renew(self) -> None:
        while not self.stop.wait(lease_seconds() / 4):
            try:
                self._write()
            except OSError:  # a passing store error: the next renewal tries again, well within the lease
                continue

    def release(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        if self.holder().get("token") == self.token:
            self.path.unlink(missing_ok=True)
