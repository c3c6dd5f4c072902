"""The http plugin caps the *decoded* body as it is decoded (issue 9, item 4)."""

from __future__ import annotations

import gzip
import struct
import time
import tracemalloc
import zlib
from collections.abc import Iterator

import pytest

from plugins.content_decoding import PIECE_BYTES, BoundedDecoder
from runtime import ToolError
from tests.plugins.tooling import ALLOW_LOOPBACK, Page, Site, call_tool, local_site

MB = 1 << 20


def gzip_of_zeros(size_mb: int) -> bytes:
    """A single-member gzip file of ``size_mb`` MiB of zeros, built without compressing them all."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    megabyte = bytes(MB)
    # After a full flush the compressor forgets its history, so every megabyte compresses alike.
    block = compressor.compress(megabyte) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(size_mb):
        crc = zlib.crc32(megabyte, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, (size_mb * MB) & 0xFFFFFFFF)
    return header + block * size_mb + compressor.flush(zlib.Z_FINISH) + trailer


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """The issue's bomb: about 2 KB on the wire, 1 GiB once both gzip layers are undone."""
    body = gzip.compress(gzip_of_zeros(1024), compresslevel=9)
    assert len(body) < 4000
    return body


@pytest.fixture
def site() -> Iterator[Site]:
    with local_site() as running:
        yield running


def test_a_gzip_of_gzip_bomb_is_cut_at_max_bytes_with_bounded_memory(site: Site, bomb: bytes) -> None:
    site.pages["/bomb"] = Page(bomb, "text/plain", {"Content-Encoding": "gzip, gzip"})
    tracemalloc.start()
    try:
        started = time.monotonic()
        result = call_tool("http", "fetch", ALLOW_LOOPBACK, url=f"{site.url}/bomb")
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result["truncated_at_bytes"] == 1_000_000
    assert len(result["text"]) == 1_000_000 and set(result["text"]) == {"\x00"}
    # The body, its text and a few 64 KB pieces; the old reader peaked above 2 GB.
    assert peak < 30 * MB, f"peak {peak / MB:.0f} MB"
    assert elapsed < 5  # the old reader blocked the event loop for 7.8 s


def test_a_bomb_respects_a_small_max_bytes(site: Site, bomb: bytes) -> None:
    site.pages["/bomb"] = Page(bomb, "text/plain", {"Content-Encoding": "gzip,gzip"})
    result = call_tool("http", "fetch", {**ALLOW_LOOPBACK, "max_bytes": 1000}, url=f"{site.url}/bomb")
    assert len(result["text"]) == 1000 and result["truncated_at_bytes"] == 1000


def test_more_than_two_stacked_encodings_are_refused(site: Site) -> None:
    body = gzip.compress(gzip.compress(gzip.compress(b"hello")))
    site.pages["/three"] = Page(body, "text/plain", {"Content-Encoding": "gzip, gzip, gzip"})
    with pytest.raises(ToolError, match="at most 2 stacked encodings"):
        call_tool("http", "fetch", ALLOW_LOOPBACK, url=f"{site.url}/three")


def test_unsupported_and_corrupt_encodings_are_tool_errors(site: Site) -> None:
    site.pages["/br"] = Page(b"\x0b\x02\x80hello\x03", "text/plain", {"Content-Encoding": "br"})
    site.pages["/corrupt"] = Page(b"\x1f\x8b\x08\x00not gzip at all", "text/plain", {"Content-Encoding": "gzip"})
    with pytest.raises(ToolError, match="unsupported content encoding 'br'"):
        call_tool("http", "fetch", ALLOW_LOOPBACK, url=f"{site.url}/br")
    with pytest.raises(ToolError, match="not valid gzip"):
        call_tool("http", "fetch", ALLOW_LOOPBACK, url=f"{site.url}/corrupt")


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send
        ("identity", lambda data: data),
        ("gzip, deflate", lambda data: zlib.compress(gzip.compress(data))),
        ("gzip", lambda data: gzip.compress(data[:40_000]) + gzip.compress(data[40_000:])),  # two members
    ],
)
def test_ordinary_encodings_decode_exactly(site: Site, encoding: str, encode: object) -> None:
    text = "".join(f"line {n}\n" for n in range(10_000))
    site.pages["/page"] = Page(encode(text.encode()), "text/plain", {"Content-Encoding": encoding})  # type: ignore[operator]
    result = call_tool("http", "fetch", ALLOW_LOOPBACK, url=f"{site.url}/page")
    assert result["text"] == text and "truncated_at_bytes" not in result


def test_decoder_hands_out_bounded_pieces_lazily(bomb: bytes) -> None:
    decoder = BoundedDecoder(["gzip", "gzip"])
    pieces = decoder.feed(bomb)
    taken = [next(pieces) for _ in range(20)]
    assert all(0 < len(piece) <= PIECE_BYTES for piece in taken)
    assert sum(len(piece) for piece in taken) <= 20 * PIECE_BYTES
