"""An OpenAI-compatible upstream that misbehaves on purpose, over raw TCP, counting what it sends.

Each connection reads one HTTP request and answers it with a ``Behaviour``: a
body that never ends, a line that never ends, or bytes dripped slowly. The
server counts the bytes it managed to send and notices when the gateway closes
the connection, so a test measures how much the gateway read (bounded by the
kernel's socket buffers), not how long it took. Every behaviour stops by itself
after ``give_up_bytes`` so that a gateway without bounds fails the test instead
of hanging it.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

CHUNK = 64 * 1024


def _chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-drip", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


@dataclass
class Connection:
    sent: int = 0
    closed_by_peer: bool = False
    finished: threading.Event = field(default_factory=threading.Event)


@dataclass
class Behaviour:
    content_type: str
    head: bytes  # sent at once after the headers
    filler: bytes  # then sent again and again
    interval_s: float = 0.0  # between two fillers

    def body(self) -> Iterator[bytes]:
        yield self.head
        while True:
            yield self.filler
            if self.interval_s:
                time.sleep(self.interval_s)


def endless_line_stream(*, after_chunks: int = 0) -> Behaviour:
    """An SSE stream (after ``after_chunks`` proper chunks) whose next line never ends: ``data: {"id": "AAAA…``."""
    head = b"".join(_chunk({"role": "assistant", "content": f"word{i} "}) for i in range(after_chunks))
    return Behaviour("text/event-stream", head + b'data: {"id": "', b"A" * CHUNK)


def endless_json_body() -> Behaviour:
    """A non-streamed answer whose JSON never ends."""
    return Behaviour("application/json", b'{"id": "', b"A" * CHUNK)


def slow_drip_json_body(interval_s: float = 0.005) -> Behaviour:
    """A non-streamed answer dripped one byte at a time, each well within any idle timeout."""
    return Behaviour("application/json", b'{"id": "', b"A", interval_s)


def slow_drip_stream(interval_s: float = 0.005) -> Behaviour:
    """An SSE stream of proper content chunks, one every ``interval_s``, that never finishes."""
    return Behaviour("text/event-stream", _chunk({"role": "assistant", "content": ""}), _chunk({"content": "drip "}), interval_s)


class MisbehavingUpstream:
    def __init__(self, behaviour: Behaviour, *, give_up_bytes: int = 64 * 1024 * 1024) -> None:
        self.behaviour = behaviour
        self.give_up_bytes = give_up_bytes
        self.connections: list[Connection] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self._stopping = False
        self._thread = threading.Thread(target=self._accept, daemon=True, name="misbehaving-upstream")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> MisbehavingUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._listener.close()

    def wait_for_connections(self, count: int, timeout_s: float = 60.0) -> list[Connection]:
        """The first ``count`` connections, once each has ended (closed by the gateway or given up)."""
        deadline = time.monotonic() + timeout_s
        while len(self.connections) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        for connection in self.connections[:count]:
            connection.finished.wait(max(0.0, deadline - time.monotonic()))
        return self.connections[:count]

    def _accept(self) -> None:
        while not self._stopping:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            connection = Connection()
            self.connections.append(connection)
            threading.Thread(target=self._serve, args=(sock, connection), daemon=True).start()

    def _serve(self, sock: socket.socket, connection: Connection) -> None:
        # A small send buffer: what the gateway does not read stays in its own receive buffer, not ours.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        try:
            self._read_request(sock)
            headers = f"HTTP/1.1 200 OK\r\nContent-Type: {self.behaviour.content_type}\r\nConnection: close\r\n\r\n".encode()
            sock.sendall(headers)
            for piece in self.behaviour.body():
                sock.sendall(piece)
                connection.sent += len(piece)
                if connection.sent >= self.give_up_bytes or self._stopping:
                    break
        except (BrokenPipeError, ConnectionResetError):
            connection.closed_by_peer = True
        except OSError:
            pass
        finally:
            sock.close()
            connection.finished.set()

    @staticmethod
    def _read_request(sock: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            piece = sock.recv(CHUNK)
            if not piece:
                raise ConnectionResetError
            data += piece
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            piece = sock.recv(CHUNK)
            if not piece:
                raise ConnectionResetError
            rest += piece
