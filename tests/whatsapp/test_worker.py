"""The reply worker end to end: signed webhooks in, the real runtime against a fake OpenAI
upstream, replies out to the fake Graph API, state in a real database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from runtime.config import Settings
from runtime.requestlog.store import RequestFilters, read_page
from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.whatsapp.conftest import (
    SALES_NUMBER,
    SUPPORT_NUMBER,
    Served,
    inbound_rows,
    outbound_rows,
    wait_for,
)
from workers.whatsapp.payloads import MEDIA_ONLY_REPLY, change, delivery, text_message
from workers.whatsapp.worker import WhatsAppWorker

Serve = Callable[[Settings], Awaitable[Served]]


def echo(body: dict[str, Any]) -> Reply:
    return Reply(text=f"echo: {body['messages'][-1]['content']}")


@pytest.fixture
async def workers() -> AsyncIterator[list[WhatsAppWorker]]:
    started: list[WhatsAppWorker] = []
    yield started
    for worker in started:
        await worker.stop()


def make_worker(served: Served, pool: list[WhatsAppWorker], **kwargs: Any) -> WhatsAppWorker:
    kwargs.setdefault("retry_backoff_s", 0.01)
    kwargs.setdefault("graph_timeout_s", 2.0)
    worker = WhatsAppWorker(served.gateway, **kwargs)
    pool.append(worker)
    return worker


def row(served: Served, wamid: str) -> Any:
    return next(r for r in inbound_rows(served.gateway) if r.wamid == wamid)


async def until_final(served: Served, count: int, timeout_s: float = 20) -> None:
    def done() -> bool:
        rows = inbound_rows(served.gateway)
        return len(rows) >= count and all(r.status not in ("pending", "processing") for r in rows)

    await wait_for(done, timeout_s=timeout_s, what=f"{count} messages finished")


async def test_text_is_answered_quoting_the_message_with_history_and_typing(
    make_settings: Callable[..., Settings], serve: Serve, upstream: FakeOpenAI, graph: FakeGraphAPI,
    workers: list[WhatsAppWorker],
) -> None:
    upstream.responder = echo
    served = await serve(make_settings(upstream_base=upstream.base_url))
    worker = make_worker(served, workers)
    first = text_message("447700900001", "Where is my order 1234?")
    await served.post_delivery(delivery(change(SUPPORT_NUMBER, messages=[first])))
    assert await worker.run_until_idle() == 1
    second = text_message("447700900001", "And when will it arrive?")
    await served.post_delivery(delivery(change(SUPPORT_NUMBER, messages=[second])))
    assert await worker.run_until_idle() == 1

    sends = graph.sent_to("447700900001")
    assert [s["text"]["body"] for s in sends] == [
        "echo: Where is my order 1234?",
        "echo: And when will it arrive?",
    ]
    assert [s["context"]["message_id"] for s in sends] == [first["id"], second["id"]]
    assert all(s["recipient_type"] == "individual" and s["type"] == "text" for s in sends)
    assert all(r.token == "EAAG-support" and r.phone_number_id == SUPPORT_NUMBER for r in graph.sends)
    # read receipt + typing indicator before each answer
    assert [r.body for r in graph.reads] == [
        {"messaging_product": "whatsapp", "status": "read", "message_id": m["id"], "typing_indicator": {"type": "text"}}
        for m in (first, second)
    ]
    # the second request carries the system prompt and the first exchange
    assert upstream.requests[1]["model"] == "gpt-test"
    assert [(m["role"], m["content"]) for m in upstream.requests[1]["messages"]] == [
        ("system", "You are Acme's support assistant."),
        ("user", "Where is my order 1234?"),
        ("assistant", "echo: Where is my order 1234?"),
        ("user", "And when will it arrive?"),
    ]
    rows = inbound_rows(served.gateway)
    assert [(r.status, r.attempts, r.lease_owner) for r in rows] == [("answered", 1, None)] * 2
    out = outbound_rows(served.gateway)
    assert [o.inbound_id for o in out] == [r.id for r in rows]
    assert all(o.wamid.startswith("wamid.") and o.status == "accepted" for o in out)


async def test_each_answered_message_is_in_the_request_log(
    make_settings: Callable[..., Settings], serve: Serve, upstream: FakeOpenAI, graph: FakeGraphAPI,
    workers: list[WhatsAppWorker],
) -> None:
    upstream.responder = echo
    served = await serve(make_settings(upstream_base=upstream.base_url))
    worker = make_worker(served, workers)
    await served.post_delivery(delivery(change(SUPPORT_NUMBER, messages=[text_message("447700900001", "Hello?")])))
    assert await worker.run_until_idle() == 1
    request_log = served.gateway.telemetry.request_log
    assert request_log is not None
    await request_log.flush()
    entries = read_page(served.gateway.engine, RequestFilters(route="whatsapp_worker"), before_id=None, limit=10)
    assert [(e["route"], e["organisation"], e["model"], e["status"]) for e in entries] == [
        ("whatsapp_worker", "acme", "gpt-test", 200)
    ]
    assert entries[0]["prompt_tokens"] > 0


async def test_history_is_bounded_by_count_and_characters(
    make_settings: Callable[..., Settings], serve: Serve, upstream: FakeOpenAI, graph: FakeGraphAPI,
    workers: list[WhatsAppWorker],
) -> None:
    upstream.responder = echo
    served = await serve(make_settings(upstream_base=upstream.base_url, history_messages=4, history_chars=60))
    worker = make_worker(served, workers)
    now = int(time.time())
    texts = ["one", "two", "three", "a much longer fourth question, forty chars", "five"]
    for i, text in enumerate(texts):
        message = text_message("447700900002", text, timestamp=now + i)
        await served.post_delivery(delivery(change(SUPPORT_NUMBER, messages=[message])))
        await worker.run_until_idle()

    def conversation(request: dict[str, Any]) -> list[str]:
        return [m["content"] for m in request["messages"] if m["role"] != "system"]

    assert conversation(upstream.requests[3]) == [
        "two", "echo: two", "three", "echo: three", "a much longer fourth question, forty chars",
    ]
    # 4 messages at most, and the long turn (42 + 48 chars) is over 60 characters:
    # only the latest pair that fits, never a reply without its question.
    assert conversation(upstream.requests[4]) == ["five"]
    assert upstream.requests[4]["messages"][0]["role"] == "system"


async def test_only_the_apps_enabled_plugins_are_offered_upstream(
    make_settings: Callable[..., Settings], serve: Serve, upstream: FakeOpenAI, graph: FakeGraphAPI,
    workers: list[WhatsAppWorker],
) -> None:
    upstream.responder = echo
    served = await serve(make_settings(upstream_base=upstream.base_url))
    worker = make_worker(served, workers)
    await served.post_delivery(delivery(
        change(SUPPORT_NUMBER, messages=[text_message("111", "what is 2+2?")]),
        change(SALES_NUMBER, messages=[text_message("222", "what time is it?")]),
    ))
    assert await worker.run_until_idle() == 2
    by_text = {r["messages"][-1]["content"]: r for r in upstream.requests}
    support_tools = [t["function"]["name"] for t in by_text["what is 2+2?"]["tools"]]
    assert support_tools and all(name.startswith("calculator__") for name in support_tools)
    assert not by_text["what time is it?"].get("tools")  # enabled_plugin_ids: [] means no tools
    assert "system" not in [m["role"] for m in by_text["what time is it?"]["messages"]]


async def test_a_long_reply_is_split_on_paragraphs_and_only_the_first_part_quotes(
    make_settings: Callable[..., Settings], serve: Serve, upstream: FakeOpenAI, graph: FakeGraphAPI,
    workers: list[WhatsAppWorker],
) -> None:
    paragraphs = [f"Paragraph {i}. " + ("word " * 600).strip() + "." for i in range(4)]
    long_reply = "\n\n".join(paragraphs)  # ~12,000 characters
    upstream.enqueue(Reply(text=long_reply))
    served = await serve(make_settings(upstream_base=upstream.base_url))
    worker = make_worker(served, workers)
    message = text_message("333", "tell me everything")
    await served.post_delivery(delivery(change(SUPPORT_NUMBER, messages=[message])))
    await worker.run_until_idle()
    sends = graph.sent_to("333")
    bodies = [s["text"]["body"] for s in sends]
    assert len(bodies) == 4
    assert bodies == paragraphs  # each cut falls on a paragraph boundary
    assert all(len(b) <= 4096 for b in bodies)
    assert sends[0]["context"] == {"message_id": message["id"]}
    assert all("context" not in s for s in sends[1:])
    assert [o.part_index for o in outbound_rows(served.gateway)] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("failure", "expected_status", "expected_attempts", "error_part"),
    [
        ("http-503", "answered", 2, None),
        ("130429", "answered", 2, None),
        ("131000", "answered", 2, None),
        ("network", "answered", 2, None),
        ("131047", "failed", 1, "131047"),
        ("131026", "failed", 1, "131026"),
        ("exhausted", "failed", 3, "gave up after 3 attempts"),
    ],
)
async def test_send_errors_are_handled_by_code(
    make_settings: Callable[..., Settings], serve: Serve, upstream: FakeOpenAI, graph: FakeGraphAPI,
    workers: list[WhatsAppWorker], failure: str, expected_status: str, expected_attempts: int,
    error_part: str | None,
) -> None:
    upstream.responder = echo
    served = await serve(make_settings(upstream_base=upstream.base_url, max_send_attempts=3))
    worker = make_worker(served, workers, graph_timeout_s=0.3)
    if failure == "http-503":
        graph.fail_next(None, http_status=503)
    elif failure == "network":
        graph.stall_next(1.0)  # longer than the client's timeout
    elif failure == "exhausted":
        graph.fail_next(131000, times=10)
    else:
        graph.fail_next(int(failure))
    message = text_message("444", "hello?")
    await served.post_delivery(delivery(change(SUPPORT_NUMBER, messages=[message])))
    await worker.start()
    await until_final(served, 1)

    result = row(served, message["id"])
    assert (result.status, result.attempts) == (expected_status, expected_attempts)
    assert len(upstream.requests) == 1  # a send retry never asks the model again
    assert result.reply_text == "echo: hello?"
    if expected_status == "answered":
        assert graph.texts_to("444") == ["echo: hello?"]
        assert len(graph.rejected) == 1
    else:
        assert graph.texts_to("444") == []
        assert error_part is not None and error_part in (result.last_error or "")
        assert len(graph.rejected) == expected_attempts  # permanent errors are not retried


async def test_model_failure_is_retried_then_dead_lettered(
    make_settings: Callable[..., Settings], serve: Serve, upstream: FakeOpenAI, graph: FakeGraphAPI,
    workers: list[WhatsAppWorker],
) -> None:
    upstream.responder = lambda body: Reply(status=500)
    served = await serve(make_settings(upstream_base=upstream.base_url, max_send_attempts=2))
    worker = make_worker(served, workers)
    message = text_message("555", "anyone there?")
    await served.post_delivery(delivery(change(SUPPORT_NUMBER, messages=[message])))
    await worker.start()
    await until_final(served, 1)
    result = row(served, message["id"])
    assert result.status == "failed"
    assert result.attempts == 2
    assert result.last_error.startswith("model: upstream_unavailable")
    assert graph.sends == []


async def test_non_text_messages_get_sensible_handling(
    make_settings: Callable[..., Settings], serve: Serve, upstream: FakeOpenAI, graph: FakeGraphAPI,
    workers: list[WhatsAppWorker],
) -> None:
    upstream.responder = echo
    served = await serve(make_settings(upstream_base=upstream.base_url))
    worker = make_worker(served, workers)
    ts = str(int(time.time()))

    def message(sender: str, kind: str, content: dict[str, Any]) -> dict[str, Any]:
        return {"from": sender, "id": f"wamid.{kind}.{sender}", "timestamp": ts, "type": kind, kind: content}

    image = message("601", "image", {"mime_type": "image/jpeg", "sha256": "abc", "id": "9001"})
    audio = message("602", "audio", {"mime_type": "audio/ogg; codecs=opus", "sha256": "abc", "id": "9002", "voice": True})
    location = message("603", "location", {"latitude": 51.5072, "longitude": -0.1276, "name": "Acme HQ", "address": "1 Main St"})
    button = message("604", "interactive", {"type": "button_reply", "button_reply": {"id": "track", "title": "Track my order"}})
    captioned = message("605", "document", {"caption": "my invoice, wrong amount", "filename": "inv.pdf", "mime_type": "application/pdf", "sha256": "x", "id": "9005"})
    reaction = message("606", "reaction", {"message_id": "wamid.X", "emoji": "\u2764"})
    await served.post_delivery(delivery(change(SUPPORT_NUMBER, messages=[image, audio, location, button, captioned, reaction])))
    await worker.run_until_idle()

    assert graph.texts_to("601") == [MEDIA_ONLY_REPLY]
    assert graph.texts_to("602") == [MEDIA_ONLY_REPLY]
    assert graph.texts_to("603") == ["echo: [shared a location: Acme HQ, 1 Main St - 51.5072, -0.1276]"]
    assert graph.texts_to("604") == ["echo: Track my order"]
    assert graph.texts_to("605") == ["echo: [sent a document (inv.pdf) you cannot see] my invoice, wrong amount"]
    assert graph.texts_to("606") == []
    assert len(upstream.requests) == 3  # canned replies never reach the model
    statuses = {r.sender: r.status for r in inbound_rows(served.gateway)}
    assert statuses == {"601": "answered", "602": "answered", "603": "answered", "604": "answered",
                        "605": "answered", "606": "ignored"}


async def test_message_that_went_stale_in_the_queue_is_not_answered(
    make_settings: Callable[..., Settings], serve: Serve, upstream: FakeOpenAI, graph: FakeGraphAPI,
    workers: list[WhatsAppWorker],
) -> None:
    upstream.responder = echo
    served = await serve(make_settings(upstream_base=upstream.base_url, max_message_age_s=3600))
    old = text_message("777", "still there?", timestamp=int(time.time()) - 120)
    fresh = text_message("778", "hi", timestamp=int(time.time()))
    await served.post_delivery(delivery(change(SUPPORT_NUMBER, messages=[old, fresh])))
    # the worker runs with a stricter age limit: the old message aged out while queued
    strict = make_settings(upstream_base=upstream.base_url, max_message_age_s=60)
    worker = make_worker(served, workers, settings=strict)
    await worker.run_until_idle()
    assert row(served, old["id"]).status == "stale"
    assert row(served, fresh["id"]).status == "answered"
    assert graph.texts_to("777") == []
    assert [r["messages"][-1]["content"] for r in upstream.requests] == ["hi"]


async def test_status_events_update_the_outbound_message(
    make_settings: Callable[..., Settings], serve: Serve, upstream: FakeOpenAI, graph: FakeGraphAPI,
    workers: list[WhatsAppWorker],
) -> None:
    upstream.responder = echo
    served = await serve(make_settings(upstream_base=upstream.base_url))
    worker = make_worker(served, workers)
    await served.post_delivery(delivery(change(SUPPORT_NUMBER, messages=[text_message("888", "yo")])))
    await worker.run_until_idle()
    [sent] = outbound_rows(served.gateway)
    ts = str(int(time.time()))

    def status(name: str, **extra: Any) -> dict[str, Any]:
        return {"id": sent.wamid, "status": name, "timestamp": ts, "recipient_id": "888", **extra}

    # out of order: "read" overtakes "delivered"; a late "delivered" must not downgrade it
    await served.post_delivery(delivery(change(SUPPORT_NUMBER, statuses=[status("sent"), status("read")])))
    await served.post_delivery(delivery(change(SUPPORT_NUMBER, statuses=[status("delivered")])))
    assert outbound_rows(served.gateway)[0].status == "read"
    failed = status("failed", errors=[{"code": 131047, "title": "Re-engagement message",
                                       "error_data": {"details": "24 hours passed"}}])
    await served.post_delivery(delivery(change(SUPPORT_NUMBER, statuses=[failed])))
    [after] = outbound_rows(served.gateway)
    assert after.status == "failed"
    assert after.last_error == "131047: Re-engagement message (24 hours passed)"
    await worker.run_until_idle()
    assert len(graph.sends) == 1  # status events are never answered
    assert len(inbound_rows(served.gateway)) == 1


async def test_conversations_are_answered_in_order_and_in_parallel(
    make_settings: Callable[..., Settings], serve: Serve, upstream: FakeOpenAI, graph: FakeGraphAPI,
    workers: list[WhatsAppWorker],
) -> None:
    calls: list[tuple[str, float]] = []

    def slow_echo(body: dict[str, Any]) -> Reply:
        calls.append((body["messages"][-1]["content"], time.monotonic()))
        return Reply(text=f"echo: {body['messages'][-1]['content']}", delay_s=0.3)

    upstream.responder = slow_echo
    served = await serve(make_settings(upstream_base=upstream.base_url, worker_concurrency=4))
    now = int(time.time())
    a = [text_message("900", f"a{i}", timestamp=now) for i in range(3)]
    b = [text_message("901", f"b{i}", timestamp=now) for i in range(2)]
    # interleaved in one delivery; Meta's order within a conversation is the order to keep
    await served.post_delivery(delivery(change(SUPPORT_NUMBER, messages=[a[0], b[0], a[1], b[1], a[2]])))
    started = time.monotonic()
    worker = make_worker(served, workers)
    await worker.start()
    await until_final(served, 5)
    elapsed = time.monotonic() - started

    sends_a = graph.sent_to("900")
    assert [s["text"]["body"] for s in sends_a] == ["echo: a0", "echo: a1", "echo: a2"]
    assert [s["context"]["message_id"] for s in sends_a] == [m["id"] for m in a]
    assert graph.texts_to("901") == ["echo: b0", "echo: b1"]
    # one at a time within a conversation: each model call starts after the previous reply went out
    send_times = {r.body["text"]["body"]: r.at for r in graph.sends}
    call_times = dict(calls)
    assert call_times["a1"] >= send_times["echo: a0"]
    assert call_times["a2"] >= send_times["echo: a1"]
    assert call_times["b1"] >= send_times["echo: b0"]
    # different conversations overlap: 5 calls of 0.3 s finish in about 3 slots, not 5
    assert abs(call_times["a0"] - call_times["b0"]) < 0.25
    assert upstream.max_in_flight == 2
    assert elapsed < 5 * 0.3 + 1.0  # generous bound; the overlap above is the real check
    # and history within the conversation follows the same order
    a2_request = next(r for r in upstream.requests if r["messages"][-1]["content"] == "a2")
    assert [m["content"] for m in a2_request["messages"][1:]] == ["a0", "echo: a0", "a1", "echo: a1", "a2"]


async def test_two_workers_under_concurrent_redelivery_answer_each_message_once(
    make_settings: Callable[..., Settings], serve: Serve, upstream: FakeOpenAI, graph: FakeGraphAPI,
    workers: list[WhatsAppWorker],
) -> None:
    upstream.responder = lambda body: Reply(text=f"echo: {body['messages'][-1]['content']}", delay_s=0.05)
    served = await serve(make_settings(upstream_base=upstream.base_url, worker_concurrency=3))
    first = make_worker(served, workers, owner="worker-1")
    second = make_worker(served, workers, owner="worker-2")
    await first.start()
    await second.start()
    senders = [f"4470090{i:04d}" for i in range(8)]
    payload = delivery(change(SUPPORT_NUMBER, messages=[text_message(s, f"hi from {s}") for s in senders]))
    # Meta redelivers while the workers are already answering
    for _ in range(3):
        responses = await asyncio.gather(*(served.post_delivery(payload) for _ in range(4)))
        assert all(r.status_code == 200 for r in responses)
        await asyncio.sleep(0.05)
    await until_final(served, 8)
    await asyncio.sleep(0.3)  # give a double answer the chance to show up
    for sender in senders:
        assert graph.texts_to(sender) == [f"echo: hi from {sender}"]
    assert len(upstream.requests) == 8
    rows = inbound_rows(served.gateway)
    assert len(rows) == 8 and all(r.status == "answered" and r.attempts == 1 for r in rows)


async def test_graceful_stop_releases_the_lease_for_another_worker(
    make_settings: Callable[..., Settings], serve: Serve, upstream: FakeOpenAI, graph: FakeGraphAPI,
    workers: list[WhatsAppWorker],
) -> None:
    upstream.enqueue(Reply(text="too slow", delay_s=1.0), Reply(text="second try"))
    served = await serve(make_settings(upstream_base=upstream.base_url))
    leaving = make_worker(served, workers, owner="leaving", stop_grace_s=0.2)
    message = text_message("990", "hello")
    await served.post_delivery(delivery(change(SUPPORT_NUMBER, messages=[message])))
    await leaving.start()
    await wait_for(lambda: len(upstream.requests) == 1, what="the model call")
    await leaving.stop()
    released = row(served, message["id"])
    assert (released.status, released.lease_owner, released.attempts) == ("pending", None, 0)
    staying = make_worker(served, workers, owner="staying")
    assert await staying.run_until_idle() == 1
    assert graph.texts_to("990") == ["second try"]
