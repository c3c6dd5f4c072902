"""Bounded decoding of an HTTP body's ``Content-Encoding`` (gzip, deflate, stacked up to two).

A 1,793-byte ``gzip, gzip`` body can hold a gigabyte of zeros. Decoding each
network chunk whole before checking a size cap (what an HTTP client's
``iter_bytes`` does) builds that gigabyte in memory. Here every layer hands on
its output in pieces of at most :data:`PIECE_BYTES` (``zlib``'s
``max_length``, keeping unread input in ``unconsumed_tail``), the layers are
chained lazily, and the reader stops pulling once it holds the bytes it wants:
memory stays at a few pieces per layer whatever the compression ratio.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

from runtime import ToolError

MAX_STACKED_ENCODINGS = 2
PIECE_BYTES = 64 * 1024
ACCEPT_ENCODING = "gzip, deflate"
_GZIP_WBITS = zlib.MAX_WBITS | 16
_CODINGS = {"gzip": _GZIP_WBITS, "x-gzip": _GZIP_WBITS, "deflate": zlib.MAX_WBITS}


def content_codings(header: str) -> list[str]:
    """The codings named by a ``Content-Encoding`` header, in the order they were applied."""
    codings = [coding.strip().lower() for coding in header.split(",")]
    codings = [coding for coding in codings if coding and coding != "identity"]
    if len(codings) > MAX_STACKED_ENCODINGS:
        raise ToolError(
            f"refused: the response is encoded {len(codings)} times over ({header}); at most {MAX_STACKED_ENCODINGS} stacked encodings are accepted"
        )
    for coding in codings:
        if coding not in _CODINGS:
            raise ToolError(f"the response uses an unsupported content encoding '{coding}'")
    return codings


class _Layer:
    """One coding, undone in pieces of at most PIECE_BYTES."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._wbits = _CODINGS[coding]
        self._decompressor = zlib.decompressobj(self._wbits)
        self._members = 0  # gzip members finished before the current one
        self._started = False
        self._ignore_rest = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        pending = data
        while not self._ignore_rest:
            if self._decompressor.eof:
                pending = self._decompressor.unused_data + pending
                if not pending or self._wbits != _GZIP_WBITS:
                    return  # a finished deflate stream ignores anything after it
                # Another gzip member follows: a multi-member file is one body.
                self._decompressor = zlib.decompressobj(self._wbits)
                self._members += 1
            piece = self._decompress(pending)
            pending = self._decompressor.unconsumed_tail
            if piece:
                yield piece
            # A full piece may leave output inside zlib even when all input is read.
            if not pending and len(piece) < PIECE_BYTES and not self._decompressor.eof:
                return

    def _decompress(self, data: bytes) -> bytes:
        try:
            piece = self._decompressor.decompress(data, PIECE_BYTES)
        except zlib.error:
            if self.coding == "deflate" and not self._started:
                # Some servers send raw deflate without the zlib wrapper the name promises.
                self._wbits = -zlib.MAX_WBITS
                self._decompressor = zlib.decompressobj(self._wbits)
                self._started = True
                return self._decompress(data)
            if self._members:
                self._ignore_rest = True  # junk after a complete gzip member, as browsers allow
                return b""
            raise ToolError(f"the response body is not valid {self.coding} data") from None
        self._started = True
        return piece


class BoundedDecoder:
    """Undoes stacked content codings lazily; iterate what :meth:`feed` returns and stop when full."""

    def __init__(self, codings: list[str]) -> None:
        # Codings are listed in the order applied, so they are undone last first.
        self._layers = [_Layer(coding) for coding in reversed(codings)]

    def feed(self, raw: bytes) -> Iterator[bytes]:
        pieces: Iterable[bytes] = (raw,)
        for layer in self._layers:
            pieces = _through(layer, pieces)
        return iter(pieces)


def _through(layer: _Layer, pieces: Iterable[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield from layer.feed(piece)
