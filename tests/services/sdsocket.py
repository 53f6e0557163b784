"""A stand-in for systemd's notify socket: a real AF_UNIX datagram socket the test reads."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time


class NotifySocket:
    """Bound in a short temporary folder (sun_path is 108 bytes), or abstract with ``abstract``.

    A thread reads datagrams as they come, like systemd does, so senders never find it full.
    """

    def __init__(self, *, abstract: bool = False) -> None:
        self._dir: str | None = None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"falcon-test-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self._dir = tempfile.mkdtemp(prefix="sd-", dir="/tmp")
            self.address = os.path.join(self._dir, "notify")
            self.sock.bind(self.address)
        self.sock.settimeout(0.05)
        self._messages: list[str] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._messages.append(data.decode())

    @property
    def messages(self) -> list[str]:
        """Every datagram received so far."""
        with self._lock:
            return list(self._messages)

    def fields(self) -> list[str]:
        """Every KEY=VALUE line received so far."""
        return [line for message in self.messages for line in message.splitlines()]

    def wait_for(self, line: str, timeout: float = 30.0, count: int = 1) -> None:
        """Wait until ``line`` was received ``count`` times; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.fields().count(line) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{line!r} x{count} not received; got {self.messages!r}")
            time.sleep(0.01)

    def close(self) -> None:
        self._closed.set()
        self._reader.join()
        self.sock.close()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
