"""An ASGI app under a real uvicorn, on a free 127.0.0.1 port, in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


def bind_loopback() -> socket.socket:
    """A socket bound to a free 127.0.0.1 port, for a ThreadedServer to listen on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class ThreadedServer:
    def __init__(self, app: Any, *, name: str, lifespan: str = "off", graceful_shutdown_s: float | None = None, options: dict[str, Any] | None = None) -> None:
        self.app = app
        self.name = name
        self.lifespan = lifespan
        self.graceful_shutdown_s = graceful_shutdown_s
        self.options = options or {}
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, *, timeout_s: float = 20.0, sock: socket.socket | None = None) -> int:
        # Binding port 0 ourselves means no other process can take the port between choosing and listening.
        # A caller that must know the address before the app is built binds it first (bind_loopback).
        if sock is None:
            sock = bind_loopback()
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan=self.lifespan, timeout_graceful_shutdown=self.graceful_shutdown_s, **self.options
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{self.name} did not start")
            time.sleep(0.01)
        return self.port

    def stop(self, *, timeout_s: float = 15.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
