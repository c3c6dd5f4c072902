"""A loopback TCP proxy a test can stop and start again: a database that becomes unreachable.

``stop()`` closes the listening socket and every connection through it, so clients see
their connections drop and new ones refused, as when a database host goes away;
``start()`` listens again on the same port. ``mute_replies_after(marker)``: once a client
has sent ``marker`` (say, PostgreSQL's ``COMMIT``), nothing more reaches it from the server, so
its request arrived and was carried out but the client never hears so, as when a connection
breaks in that instant.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from concurrent.futures import Future


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._mute_after: bytes | None = None
        self.muted = threading.Event()  # a client sent the marker: its replies are dropped from now on

    def mute_replies_after(self, marker: bytes) -> None:
        self._mute_after = marker

    def start(self) -> TcpProxy:
        self._call(self._listen())
        return self

    def stop(self) -> None:
        self._call(self._close())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _call(self, coroutine: object) -> None:
        future: Future[None] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]
        future.result(timeout=10)

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._serve, sock=sock)

    async def _close(self) -> None:
        self._mute_after = None
        self.muted.clear()
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, upstream_writer))

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, from_client: bool) -> None:
            try:
                while data := await reader.read(65536):
                    if not from_client and self.muted.is_set():
                        continue  # the server's reply never reaches the client
                    writer.write(data)
                    await writer.drain()
                    if from_client and self._mute_after is not None and self._mute_after in data:
                        self.muted.set()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.transport.abort()
                self._writers.discard(writer)

        await asyncio.gather(pipe(client_reader, upstream_writer, from_client=True), pipe(upstream_reader, client_writer, from_client=False))
