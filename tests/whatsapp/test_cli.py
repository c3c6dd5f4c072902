"""``plugway whatsapp simulate`` against a running gateway, answered by a ``plugway worker``
process that stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest
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
from workers.whatsapp.cli import dead_letters, simulate
from workers.whatsapp.payloads import change, delivery, text_message
from workers.whatsapp.worker import WhatsAppWorker


async def test_simulate_posts_a_signed_message_that_a_worker_process_answers(
    database_url: str,
    graph: FakeGraphAPI,
    upstream: FakeOpenAI,
    serve: Callable[[Settings], Awaitable[Served]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    upstream.responder = lambda body: Reply(text=f"echo: {body['messages'][-1]['content']}")
    raw = settings_dict(database_url, graph.base_url, upstream.base_url)
    settings = settings_from_dict(raw)
    served = await serve(settings)
    config = tmp_path / "plugway.yaml"
    config.write_text(yaml.safe_dump(raw))

    code = await anyio.to_thread.run_sync(
        lambda: simulate(served.base_url, settings, "acme-support", "Hello from the CLI", "15550001111")
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "-> 200" in out and '"stored": 1' in out
    [row] = inbound_rows(served.gateway)
    assert (row.app_id, row.sender, row.text, row.status) == (
        "acme-support", "15550001111", "Hello from the CLI", "pending",
    )
    assert upstream.requests == []

    process = await anyio.to_thread.run_sync(lambda: start_worker_process(config))
    try:
        await wait_for(
            lambda: inbound_rows(served.gateway)[0].status == "answered", timeout_s=30, what="the answer"
        )
        process.send_signal(signal.SIGTERM)
        returncode = await anyio.to_thread.run_sync(lambda: process.wait(timeout=15))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = process.stdout.read().decode() if process.stdout else ""
    assert returncode == 0, output
    assert "whatsapp worker" in output
    assert graph.texts_to("15550001111") == ["echo: Hello from the CLI"]
    assert graph.sent_to("15550001111")[0]["context"]["message_id"] == row.wamid
    assert graph.sends[0].phone_number_id == SUPPORT_NUMBER


async def test_simulate_reports_unknown_apps_and_refusals(
    database_url: str,
    graph: FakeGraphAPI,
    serve: Callable[[Settings], Awaitable[Served]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = settings_from_dict(settings_dict(database_url, graph.base_url, "http://127.0.0.1:9/v1"))
    served = await serve(settings)
    assert simulate(served.base_url, settings, "no-such-app", "hi", "1") == 2
    assert "unknown WhatsApp app 'no-such-app'" in capsys.readouterr().err

    # an operator whose local config has the wrong secret sees the gateway refuse it
    wrong = settings.model_copy(deep=True)
    wrong.whatsapp.apps[0].app_secret = "stale-secret"
    code = await anyio.to_thread.run_sync(lambda: simulate(served.base_url, wrong, "acme-support", "hi", "1"))
    assert code == 1
    assert "-> 403" in capsys.readouterr().out
    assert inbound_rows(served.gateway) == []


async def test_dead_letters_lists_failed_messages_with_their_error(
    database_url: str,
    graph: FakeGraphAPI,
    upstream: FakeOpenAI,
    serve: Callable[[Settings], Awaitable[Served]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    upstream.responder = lambda body: Reply(text="late reply")
    settings = settings_from_dict(settings_dict(database_url, graph.base_url, upstream.base_url))
    served = await serve(settings)
    graph.fail_next(131047)
    message = text_message("15550002222", "are you open?")
    await served.post_delivery(delivery(change(SUPPORT_NUMBER, messages=[message])))
    worker = WhatsAppWorker(served.gateway)
    try:
        await worker.run_until_idle()
    finally:
        await worker.stop()
    assert await anyio.to_thread.run_sync(lambda: dead_letters(settings)) == 0
    out = capsys.readouterr().out
    assert message["id"] in out and "acme-support" in out and "are you open?" in out
    assert "131047: (#131047) Re-engagement message" in out
