"""Wake-ups between processes on one machine, for the SQLite store: a Unix datagram socket per listening
process in one folder. Senders write one datagram to every socket there, naming the jobs that changed
(store/changes.py); a listener blocks until one arrives and reads every pending one. Losing a wake-up only
costs latency (listeners also wake on a timeout), so every error is ignored."""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

from fluxserve.store import changes
from fluxserve.store.changes import Changes

# Larger than any payload changes.encode sends.
DATAGRAM_BYTES = 4 * changes.MAX_PAYLOAD


def doorbell_folder(db_path: Path) -> Path:
    """A short folder for the sockets (Unix socket paths are limited to about 100 bytes), one per database."""
    digest = hashlib.sha1(str(db_path.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"fluxserve-{digest}"


class Doorbell:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)

    def ring(self, payload: str = changes.EVERY_JOB) -> None:
        data = payload.encode()
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return
        for name in names:  # this process's own listener too: a change made here wakes waiters here
            path = self.folder / name
            try:
                self._sender.sendto(data, str(path))
            except (BlockingIOError, OSError) as exc:
                if isinstance(exc, ConnectionRefusedError):  # its process is gone
                    path.unlink(missing_ok=True)

    @property
    def _path(self) -> Path | None:
        return self.folder / f"{os.getpid()}-{id(self)}.sock" if self._sock else None

    def wait(self, timeout_s: float) -> Changes:
        """Block until rung or timeout_s passes: what the pending rings said (NOTHING on a timeout)."""
        with self._lock:
            if self._sock is None:
                try:
                    self._sock = self._bind()
                except OSError:  # no doorbell here: fall back to waiting out the timeout
                    time.sleep(timeout_s)
                    return changes.NOTHING
        self._sock.settimeout(timeout_s)
        try:
            heard = changes.decode(self._sock.recv(DATAGRAM_BYTES).decode())
        except (TimeoutError, OSError, UnicodeDecodeError):
            return changes.NOTHING
        self._sock.setblocking(False)
        try:
            while True:
                heard |= changes.decode(self._sock.recv(DATAGRAM_BYTES).decode())
        except (OSError, UnicodeDecodeError):
            pass
        return heard

    def _bind(self) -> socket.socket:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = self.folder / f"{os.getpid()}-{id(self)}.sock"
        path.unlink(missing_ok=True)
        sock.bind(str(path))
        return sock

    def close(self) -> None:
        if self._sock is not None:
            path = self._path
            self._sock.close()
            if path:
                path.unlink(missing_ok=True)
            self._sock = None
        self._sender.close()
