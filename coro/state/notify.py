"""Notices between processes that share one SQLite file: "job X has new lines or status".

A backend with live subscribers (`Listener`) binds a Unix datagram socket in a private
directory beside the database, `<state.db>.notify/` (mode 0700: only its owner can
list or reach the sockets; `/tmp/coro-<uid>/<hash of the path>` instead when that path
would not fit in a socket address). A backend that committed log lines or a status
change (`Announcer`, on its worker thread, after the commit) sends the job id to every
other socket there.

A notice carries nothing but a job id: the receiver reads what changed from the
database, so a stray notice costs a read, never a wrong line. Sending never blocks:
a socket nobody is bound to any more (its process died) is removed; notices a busy
receiver has no room for are kept and sent again shortly, with a growing pause.
When nobody listens, announcing costs one `lstat` of the directory.

Nothing here runs on a timer of its own: a `Listener` is woken by the datagrams it
receives, an `Announcer` works after the commits it announces, and only while it owes
notices (`retry_in`) does its worker thread wake to send them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import stat
import time
from collections.abc import Callable, Collection
from pathlib import Path

logger = logging.getLogger(__name__)

#: Whether this platform has what it takes (Unix datagram sockets, user ids).
SUPPORTED = hasattr(socket, "AF_UNIX") and hasattr(os, "geteuid")

#: Longest socket path the kernel accepts (`sun_path` is 108 bytes with its NUL).
_MAX_SOCKET_PATH = 107
#: `<pid>-<8 hex>`: at most 7 + 1 + 8 characters.
_NAME_CHARS = 16
#: Longest notice accepted (job ids are far shorter).
MAX_NOTICE = 1024
#: A directory changed this recently may change again within its timestamp's
#: granularity, unseen: list it afresh rather than trust a cached listing.
_RACY_NS = 1_000_000_000
#: Notices read per wake-up of the event loop (the rest on the next one).
_DRAIN_LIMIT = 256
#: Pauses before sending notices again to a receiver that had no room (seconds).
_FIRST_RETRY = 0.01
_MAX_RETRY = 1.0


def notify_dir(db_path: Path) -> Path | None:
    """Where the sockets of processes sharing `db_path` live (None: not supported)."""
    if not SUPPORTED:
        return None
    resolved = Path(db_path).resolve()
    beside = resolved.with_name(resolved.name + ".notify")
    if len(os.fsencode(beside)) + 1 + _NAME_CHARS <= _MAX_SOCKET_PATH:
        return beside
    digest = hashlib.sha256(os.fsencode(resolved)).hexdigest()[:32]
    return _short_root() / digest


def _short_root() -> Path:
    # not $TMPDIR: every process on the database must agree, whatever its environment
    return Path("/tmp") / f"coro-{os.geteuid()}"


def _ensure_private(path: Path) -> None:
    """Make `path` a directory only this user can use; OSError if it is someone else's."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise PermissionError(f"{path} is not a directory of this user")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)


def _owned_dir(info: os.stat_result) -> bool:
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()


class Listener:
    """This backend's socket: hands each job id it is told about to `on_notice`.

    `start` binds it (on the event loop that runs the backend); `close` removes it.
    """

    def __init__(self, directory: Path, on_notice: Callable[[str], None]) -> None:
        self.directory = directory
        self._on_notice = on_notice
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: the socket's file name in `directory`, once bound
        self.name: str | None = None

    @property
    def started(self) -> bool:
        return self._sock is not None

    def start(self) -> None:
        """Bind the socket and read it from the running loop; OSError if impossible."""
        if self._sock is not None:
            return
        loop = asyncio.get_running_loop()
        if self.directory.parent == _short_root():
            _ensure_private(self.directory.parent)
        _ensure_private(self.directory)
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(str(self.directory / name))
            loop.add_reader(sock.fileno(), self._drain)
        except BaseException:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(self.directory / name)
            raise
        self._sock, self.name, self._loop = sock, name, loop

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())
        sock.close()
        if self.name is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.directory / self.name)

    def _drain(self) -> None:
        sock = self._sock
        if sock is None:
            return
        # a bounded share of the loop per wake-up: a flood of notices waits its turn
        for _ in range(_DRAIN_LIMIT):
            try:
                data = sock.recv(MAX_NOTICE + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                logger.debug("reading notices failed", exc_info=True)
                return
            job_id = _decode(data)
            if job_id is not None:
                self._on_notice(job_id)


def _decode(data: bytes) -> str | None:
    """The job id a notice names, or None for anything that is not one."""
    if not data or len(data) > MAX_NOTICE or b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


class Announcer:
    """Sends "job changed" notices to the other listeners of one directory.

    Used by one thread only (the SQLite backend's worker). The directory listing is
    cached while the directory's timestamp says it did not change; each listener gets
    its own connected socket, so one that stops reading fills only its own queue.
    """

    def __init__(self, directory: Path, own: Callable[[], str | None]) -> None:
        self.directory = directory
        self._directory = str(directory)  # stat'ed after every commit: no Path on the way
        self._own = own
        self._peers: dict[str, socket.socket] = {}
        self._listed_mtime: int | None = None
        # notices not delivered yet (the receiver had no room), per listener
        self._owed: dict[str, set[str]] = {}
        self._retry_at = 0.0
        self._pause = _FIRST_RETRY

    def announce(self, job_ids: Collection[str]) -> None:
        if not job_ids or not self._refresh():
            return
        own = self._own()
        for name in list(self._peers):
            if name != own:
                self._owed.setdefault(name, set()).update(job_ids)
        self._flush()

    def retry_in(self) -> float | None:
        """Seconds until owed notices should be sent again; None when none are owed."""
        if not self._owed:
            return None
        return max(self._retry_at - time.monotonic(), 0.0)

    def retry(self) -> None:
        self._refresh()
        self._flush()

    def close(self) -> None:
        for sock in self._peers.values():
            sock.close()
        self._peers.clear()
        self._owed.clear()
        self._listed_mtime = None

    # -- plumbing ----------------------------------------------------------------------

    def _refresh(self) -> bool:
        """Bring the listener sockets up to date with the directory; whether any."""
        try:
            info = os.lstat(self._directory)
        except OSError:
            info = None
        if info is None or not _owned_dir(info):
            if self._peers:
                self.close()
            return False
        fresh = time.time_ns() - info.st_mtime_ns > _RACY_NS
        if info.st_mtime_ns == self._listed_mtime and fresh:
            return bool(self._peers)
        try:
            names = set(os.listdir(self._directory))
        except OSError:
            return bool(self._peers)
        names.discard(self._own() or "")
        for gone in self._peers.keys() - names:
            self._drop(gone)
        for name in names - self._peers.keys():
            self._connect(name)
        self._listed_mtime = info.st_mtime_ns if fresh else None
        return bool(self._peers)

    def _connect(self, name: str) -> None:
        path = self.directory / name
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(str(path))
        except ConnectionRefusedError:  # its owner is gone without cleaning up
            sock.close()
            self._remove_stale(path)
            return
        except OSError:
            sock.close()
            return
        self._peers[name] = sock

    def _drop(self, name: str) -> None:
        sock = self._peers.pop(name, None)
        if sock is not None:
            sock.close()
        self._owed.pop(name, None)

    def _remove_stale(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)

    def _flush(self) -> None:
        for name in list(self._owed):
            sock = self._peers.get(name)
            if sock is None:
                self._owed.pop(name, None)
                continue
            jobs = self._owed[name]
            for job_id in list(jobs):
                data = job_id.encode("utf-8")
                if len(data) > MAX_NOTICE:
                    jobs.discard(job_id)
                    continue
                try:
                    sock.send(data)
                except (BlockingIOError, InterruptedError):
                    break  # no room: the rest waits for the retry
                except (ConnectionRefusedError, ConnectionResetError, FileNotFoundError):
                    self._drop(name)  # it closed; a listing will show whether it is back
                    self._remove_stale(self.directory / name)
                    break
                except OSError:
                    logger.debug("sending a notice to %s failed", name, exc_info=True)
                    self._drop(name)
                    break
                jobs.discard(job_id)
            if not jobs:
                self._owed.pop(name, None)
        if self._owed:
            self._retry_at = time.monotonic() + self._pause
            self._pause = min(self._pause * 2, _MAX_RETRY)
        else:
            self._pause = _FIRST_RETRY
