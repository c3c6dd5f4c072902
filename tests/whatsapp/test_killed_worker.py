"""A worker process killed with SIGKILL mid-message: its lease expires and another worker
answers the message exactly once."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import yaml

from runtime.config import Settings, settings_from_dict
from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.whatsapp.conftest import (
    SUPPORT_NUMBER,
    Served,
    inbound_rows,
    settings_dict,
    start_worker_process,
    wait_for,
)
from workers.whatsapp.payloads import change, delivery, text_message
from workers.whatsapp.worker import WhatsAppWorker

LEASE_S = 3.0
# The dead worker renewed its lease at most a third of a lease before it died.
LEASE_LEFT_AT_KILL_S = LEASE_S * 2 / 3


async def test_worker_killed_mid_message_is_answered_once_by_another(
    database_url: str,
    graph: FakeGraphAPI,
    upstream: FakeOpenAI,
    serve: Callable[[Settings], Awaitable[Served]],
    tmp_path: Path,
) -> None:
    raw = settings_dict(database_url, graph.base_url, upstream.base_url, lease_s=LEASE_S)
    settings = settings_from_dict(raw)
    served = await serve(settings)  # the gateway (and its tables) exist before the worker starts
    config = tmp_path / "plugway.yaml"
    config.write_text(yaml.safe_dump(raw))

    # The doomed worker's model call hangs; the survivor's is answered at once.
    upstream.enqueue(Reply(text="never sent", delay_s=4.0), Reply(text="answered after the crash"))
    message = text_message("447700900666", "is anybody there?")
    await served.post_delivery(delivery(change(SUPPORT_NUMBER, messages=[message])))

    process = await anyio.to_thread.run_sync(lambda: start_worker_process(config))
    try:
        await wait_for(lambda: len(upstream.requests) == 1, timeout_s=30, what="the worker process's model call")
        [row] = inbound_rows(served.gateway)
        assert row.status == "processing"
        assert f":{process.pid}:" in row.lease_owner
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        killed_at = time.monotonic()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        output = process.stdout.read().decode() if process.stdout else ""
    assert process.returncode == -signal.SIGKILL, output

    survivor = WhatsAppWorker(served.gateway, owner="survivor", retry_backoff_s=0.01)
    try:
        # While the dead worker's lease is live, nothing is taken (on a slow machine this
        # first look may already come after it lapsed; it must never come before).
        if await survivor.run_once() != 0:
            assert time.monotonic() - killed_at >= LEASE_LEFT_AT_KILL_S
        await survivor.start()
        await wait_for(
            lambda: inbound_rows(served.gateway)[0].status == "answered", timeout_s=15, what="the answer"
        )
    finally:
        await survivor.stop()

    assert graph.texts_to("447700900666") == ["answered after the crash"]
    assert [r.body["message_id"] for r in graph.reads] == [message["id"], message["id"]]
    [row] = inbound_rows(served.gateway)
    assert (row.status, row.attempts, row.lease_owner) == ("answered", 2, None)
    assert row.reply_text == "answered after the crash"
    assert len(upstream.requests) == 2
