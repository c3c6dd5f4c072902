"""The webhook's refusals over real HTTP: oversized bodies are refused without being
buffered, and every non-200 answer carries the one documented error envelope."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from runtime.config import Settings, settings_from_dict
from tests.fakes.graph_api import FakeGraphAPI
from tests.whatsapp.conftest import (
    APP_SECRET,
    SUPPORT_NUMBER,
    VERIFY_TOKEN,
    Served,
    inbound_rows,
    settings_dict,
)
from workers.whatsapp.payloads import SIGNATURE_HEADER, change, delivery, encode, sign, text_message

Serve = Callable[[Settings], Awaitable[Served]]

BODY_CAP = 1024 * 1024  # the test gateway's max_body_bytes
ATTEMPTED_BODY = 128 * 1024 * 1024  # what the client offers to send
CHUNK = 64 * 1024
# Loopback socket buffers on both sides can swallow a few megabytes before anyone reads:
# a server that stops at the cap answers long before this much has gone out.
SENT_BEFORE_ANSWER_BOUND = 32 * 1024 * 1024


@pytest.fixture
def small_cap_settings(tmp_path: Path, graph: FakeGraphAPI) -> Settings:
    raw = settings_dict(f"sqlite:///{tmp_path / 'wa.db'}", graph.base_url, "http://127.0.0.1:9/v1")
    raw["max_body_bytes"] = BODY_CAP
    return settings_from_dict(raw)


@dataclass
class RawAnswer:
    status: int
    body: bytes
    bytes_sent: int  # body bytes the client had written when the answer arrived


async def post_streaming(served: Served, headers: dict[str, str], *, chunked: bool) -> RawAnswer:
    """POST ``ATTEMPTED_BODY`` bytes over a raw socket, writing while watching for the answer.

    httpx writes the whole body before it reads the answer, so it cannot tell whether the
    server answered early; a raw socket can: it stops writing as soon as the answer is in.
    """
    host, port = served.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = ["POST /webhooks/whatsapp HTTP/1.1", f"Host: {host}:{port}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {ATTEMPTED_BODY}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())

    async def read_answer() -> tuple[int, bytes]:
        status_and_headers = await reader.readuntil(b"\r\n\r\n")
        lines = status_and_headers.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(
            int(line.split(":", 1)[1])
            for line in lines
            if line.lower().startswith("content-length:")
        )
        return status, await reader.readexactly(length)

    answer = asyncio.create_task(read_answer())
    sent = 0
    payload = b"{" + b" " * (CHUNK - 1)  # starts like a JSON object, never ends
    try:
        while sent < ATTEMPTED_BODY and not answer.done():
            writer.write(b"%x\r\n%s\r\n" % (len(payload), payload) if chunked else payload)
            sent += len(payload)
            await writer.drain()
            await asyncio.sleep(0)  # the server runs in this event loop: let it read
    except (ConnectionError, OSError):
        pass  # the server may close the connection on us once it has answered
    try:
        status, body = await asyncio.wait_for(answer, timeout=60)
    finally:
        writer.close()
    return RawAnswer(status, body, sent)


def assert_envelope(body: bytes | dict[str, Any], code: str, error_type: str) -> None:
    """The webhook's one error shape: the gateway's OpenAI envelope."""
    parsed = orjson.loads(body) if isinstance(body, bytes) else body
    assert set(parsed) == {"error"}, parsed
    error = parsed["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert (error["code"], error["type"], error["param"]) == (code, error_type, None), error


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
async def test_an_oversized_declared_body_is_refused_before_it_is_read(
    small_cap_settings: Settings, serve: Serve, signed: bool
) -> None:
    served = await serve(small_cap_settings)
    headers = {"Content-Type": "application/json"}
    if signed:  # a signature header makes no difference: the size is checked first
        headers[SIGNATURE_HEADER] = sign(APP_SECRET, b"whatever")
    answer = await post_streaming(served, headers, chunked=False)
    assert answer.status == 413
    assert answer.bytes_sent < SENT_BEFORE_ANSWER_BOUND, answer.bytes_sent
    assert_envelope(answer.body, "request_too_large", "invalid_request_error")
    assert inbound_rows(served.gateway) == []


async def test_an_oversized_chunked_body_is_refused_once_the_cap_is_read(
    small_cap_settings: Settings, serve: Serve
) -> None:
    served = await serve(small_cap_settings)
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(APP_SECRET, b"whatever")}
    answer = await post_streaming(served, headers, chunked=True)
    assert answer.status == 413
    assert answer.bytes_sent < SENT_BEFORE_ANSWER_BOUND, answer.bytes_sent
    assert_envelope(answer.body, "request_too_large", "invalid_request_error")
    assert inbound_rows(served.gateway) == []

    # The gateway is still fine, and a body under the cap still gets in.
    payload = delivery(change(SUPPORT_NUMBER, messages=[text_message("447700900001", "x" * 1000)]))
    body = encode(payload)
    ok = await served.client.post(
        "/webhooks/whatsapp",
        content=body,
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(APP_SECRET, body)},
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["stored"] == 1


async def test_every_refusal_uses_the_documented_envelope(
    small_cap_settings: Settings, serve: Serve
) -> None:
    served = await serve(small_cap_settings)
    client = served.client
    payload = encode(delivery(change(SUPPORT_NUMBER, messages=[text_message("1", "hi")])))

    unsigned = await client.post("/webhooks/whatsapp", content=payload)
    assert unsigned.status_code == 401
    assert_envelope(unsigned.json(), "missing_signature", "authentication_error")

    forged = await client.post(
        "/webhooks/whatsapp", content=payload, headers={SIGNATURE_HEADER: sign("guessed", payload)}
    )
    assert forged.status_code == 403
    assert_envelope(forged.json(), "invalid_signature", "authentication_error")

    for not_an_object in (b"{not json", b"[]", b'"entry"', b"42", b"null", b"\xff\xfe{}"):
        refused = await client.post(
            "/webhooks/whatsapp",
            content=not_an_object,
            headers={SIGNATURE_HEADER: sign(APP_SECRET, not_an_object)},
        )
        assert refused.status_code == 400, not_an_object
        assert_envelope(refused.json(), "invalid_payload", "invalid_request_error")

    too_large = b"{" + b" " * BODY_CAP + b"}"
    declared = await client.post(
        "/webhooks/whatsapp",
        content=too_large,
        headers={SIGNATURE_HEADER: sign(APP_SECRET, too_large)},
    )
    assert declared.status_code == 413
    assert_envelope(declared.json(), "request_too_large", "invalid_request_error")

    handshake = await client.get(
        "/webhooks/whatsapp",
        params={"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "77"},
    )
    assert handshake.status_code == 403
    assert_envelope(handshake.json(), "verification_failed", "authentication_error")
    ok = await client.get(
        "/webhooks/whatsapp",
        params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "77"},
    )
    assert (ok.status_code, ok.text) == (200, "77")

    assert inbound_rows(served.gateway) == []
