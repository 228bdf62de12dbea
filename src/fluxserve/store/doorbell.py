"""Wake-ups between processes on one machine, for the SQLite store: a Unix datagram socket per listening process
in one folder. Senders write one byte to every socket there; a listener blocks until a byte arrives. Losing a
wake-up only costs latency (listeners also wake on a timeout), so every error is ignored."""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import threading
import time
from pathlib import Path


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

    def ring(self) -> None:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return
        for name in names:  # this process's own listener too: a change made here wakes waiters here
            path = self.folder / name
            try:
                self._sender.sendto(b".", str(path))
            except (BlockingIOError, OSError) as exc:
                if isinstance(exc, ConnectionRefusedError):  # its process is gone
                    path.unlink(missing_ok=True)

    @property
    def _path(self) -> Path | None:
        return self.folder / f"{os.getpid()}-{id(self)}.sock" if self._sock else None

    def wait(self, timeout_s: float) -> bool:
        """Block until rung or timeout_s passes; True when rung. Drains pending rings."""
        with self._lock:
            if self._sock is None:
                try:
                    self._sock = self._bind()
                except OSError:  # no doorbell here: fall back to waiting out the timeout
                    time.sleep(timeout_s)
                    return False
        self._sock.settimeout(timeout_s)
        try:
            self._sock.recv(64)
        except (TimeoutError, OSError):
            return False
        self._sock.setblocking(False)
        try:
            while self._sock.recv(64):
                pass
        except OSError:
            pass
        return True

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
