"""Signed deliveries with malformed events, over real HTTP on SQLite and PostgreSQL: each
event is handled alone, a malformed one is recorded as rejected with its reason, and
Meta always gets a 200 for a signed JSON object, so it never redelivers forever."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import orjson
import pytest

from runtime.config import Settings
from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.whatsapp.conftest import (
    SALES_NUMBER,
    SUPPORT_NUMBER,
    Served,
    inbound_rows,
    outbound_rows,
    status_rows,
)
from workers.whatsapp.cli import dead_letters
from workers.whatsapp.payloads import change, delivery_entries, text_message
from workers.whatsapp.store import InboundStore
from workers.whatsapp.worker import WhatsAppWorker

Serve = Callable[[Settings], Awaitable[Served]]


def by_wamid(served: Served) -> dict[str, Any]:
    return {row.wamid: row for row in inbound_rows(served.gateway)}


def malformed_delivery(now: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A delivery mixing good messages with every kind of malformed one from the issue."""
    good = text_message("111", "hello", wamid="wamid.GOOD1", timestamp=now)
    text_as_string = {**text_message("111", "x", wamid="wamid.TXTSTR", timestamp=now), "text": "hi"}
    twenty_digit_ts = {
        **text_message("111", "late", wamid="wamid.TS20"),
        "timestamp": "12345678901234567890",
    }
    huge_int_ts = {
        **text_message("111", "late", wamid="wamid.TSINT"),
        "timestamp": 18446744073709551615,
    }
    long_wamid = text_message("111", "long id", wamid="wamid." + "x" * 420, timestamp=now)
    long_sender = text_message("9" * 300, "long sender", wamid="wamid.LONGFROM", timestamp=now)
    wrong_type = {
        **text_message("111", "typed", wamid="wamid.TYPEOBJ", timestamp=now),
        "type": {"a": 1},
    }
    nameless_profile = text_message(
        "222", "profile is a string", wamid="wamid.GOOD2", timestamp=now
    )
    long_name = text_message("333", "very long name", wamid="wamid.GOOD3", timestamp=now)
    nul_text = text_message("444", "a\x00b", wamid="wamid.GOOD4", timestamp=now)
    unroutable = text_message("555", "metadata is a string", wamid="wamid.NOMETA", timestamp=now)

    support = change(SUPPORT_NUMBER, messages=[good])
    support["value"]["messages"] += [
        text_as_string,
        twenty_digit_ts,
        huge_int_ts,
        long_wamid,
        long_sender,
        wrong_type,
        42,
    ]
    profile_string = change(SUPPORT_NUMBER, messages=[nameless_profile])
    profile_string["value"]["contacts"] = [{"profile": "Kerry", "wa_id": "222"}]
    name_too_long = change(SUPPORT_NUMBER, messages=[long_name], contact_name="N" * 450)
    metadata_string = change(SUPPORT_NUMBER, messages=[unroutable])
    metadata_string["value"]["metadata"] = SUPPORT_NUMBER
    sales = change(SALES_NUMBER, messages=[nul_text])
    payload = delivery_entries([support, profile_string], [name_too_long, metadata_string, sales])
    named = {
        "good": good,
        "text_as_string": text_as_string,
        "twenty_digit_ts": twenty_digit_ts,
        "huge_int_ts": huge_int_ts,
        "long_wamid": long_wamid,
        "long_sender": long_sender,
        "wrong_type": wrong_type,
    }
    return payload, named


async def test_a_malformed_message_is_rejected_alone_and_the_delivery_answered_200(
    make_settings: Callable[..., Settings], serve: Serve, upstream: FakeOpenAI, graph: FakeGraphAPI
) -> None:
    upstream.responder = lambda body: Reply(text=f"echo: {body['messages'][-1]['content']}")
    served = await serve(make_settings(upstream_base=upstream.base_url))
    payload, named = malformed_delivery(int(time.time()))

    response = await served.post_delivery(payload)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["stored"], answer["duplicates"], answer["unrouted"], answer["rejected"]) == (
        4,
        0,
        0,
        8,
    )
    reasons = {entry["id"]: entry["reason"] for entry in answer["rejections"]}
    assert "metadata" in reasons["wamid.NOMETA"]

    rows = by_wamid(served)
    good = {
        wamid: rows[wamid] for wamid in ("wamid.GOOD1", "wamid.GOOD2", "wamid.GOOD3", "wamid.GOOD4")
    }
    assert all(row.status == "pending" for row in good.values())
    assert good["wamid.GOOD1"].text == "hello"
    assert good["wamid.GOOD2"].sender_name is None  # a malformed profile only costs the name
    assert good["wamid.GOOD3"].sender_name == "N" * 400  # cut to its column, not a failure
    assert good["wamid.GOOD4"].text == "ab"  # PostgreSQL text cannot hold NUL

    rejected = [row for row in rows.values() if row.status == "rejected"]
    assert len(rejected) == 7  # the unroutable one has no app to be recorded under
    assert "wamid.NOMETA" not in rows
    reason_of = {row.wamid: row.last_error for row in rejected}
    assert "'text'" in reason_of["wamid.TXTSTR"]
    assert "timestamp" in reason_of["wamid.TS20"]
    assert "timestamp" in reason_of["wamid.TSINT"]
    assert "'from'" in reason_of["wamid.LONGFROM"]
    assert "'type'" in reason_of["wamid.TYPEOBJ"]
    assert any("not a JSON object" in (reason or "") for reason in reason_of.values())
    long_id_rows = [row for row in rejected if "'id' is longer than 400" in (row.last_error or "")]
    assert len(long_id_rows) == 1 and len(long_id_rows[0].wamid) <= 400
    for row in rejected:
        assert row.text is None and row.finished_at is not None
        assert len(row.sender) <= 200 and len(row.wamid) <= 400
    # The message is kept as received, for the operator.
    assert orjson.loads(by_wamid(served)["wamid.TXTSTR"].raw) == named["text_as_string"]
    assert orjson.loads(long_id_rows[0].raw) == named["long_wamid"]

    # Meta's redelivery of the same body changes nothing and is still a 200.
    again = await served.post_delivery(payload)
    assert again.status_code == 200
    assert (again.json()["stored"], again.json()["duplicates"], again.json()["rejected"]) == (
        0,
        4,
        8,
    )
    assert len(inbound_rows(served.gateway)) == 11

    # The worker answers the good messages and never a rejected one.
    worker = WhatsAppWorker(served.gateway, retry_backoff_s=0.01, graph_timeout_s=2.0)
    try:
        assert await worker.run_until_idle() == 4
    finally:
        await worker.stop()
    assert sorted(send.body["to"] for send in graph.sends) == ["111", "222", "333", "444"]
    assert graph.texts_to("111") == ["echo: hello"]
    after = by_wamid(served)
    assert all(after[row.wamid].status == "rejected" for row in rejected)
    assert all(after[wamid].status == "answered" for wamid in good)


async def test_malformed_status_events_are_rejected_alone(
    make_settings: Callable[..., Settings], serve: Serve
) -> None:
    served = await serve(make_settings())
    store = InboundStore(served.gateway.engine)
    app = served.settings.whatsapp.apps[0]
    await anyio.to_thread.run_sync(
        lambda: store.record_outbound(
            app_id=app.id,
            inbound_id=1,
            part_index=0,
            wamid="wamid.OUT2",
            recipient="111",
            body="hi",
        )
    )
    ts = str(int(time.time()))
    statuses: list[Any] = [
        {"id": "wamid.OUT1", "status": "sent", "timestamp": ts, "recipient_id": "111"},
        # tolerated: errors and recipient are details, the event itself is readable
        {
            "id": "wamid.OUT1",
            "status": "delivered",
            "timestamp": ts,
            "recipient_id": {"x": 1},
            "errors": "not a list",
        },
        {
            "id": "wamid.OUT2",
            "status": "failed",
            "timestamp": ts,
            "recipient_id": "111",
            "errors": [
                {"code": 131047, "title": "Re-\x00engagement", "error_data": "not an object"},
                7,
            ],
        },
        # rejected
        {"id": "wamid.OUT3", "status": "read", "timestamp": "12345678901234567890"},
        {"id": "wamid." + "y" * 500, "status": "read", "timestamp": ts},
        {"id": "wamid.OUT4", "status": "s" * 30, "timestamp": ts},
        {"id": ["wamid.OUT5"], "status": "read", "timestamp": ts},
        "not an object",
    ]
    payload = delivery_entries([change(SUPPORT_NUMBER, statuses=statuses)])
    response = await served.post_delivery(payload)
    assert response.status_code == 200, response.text
    assert (response.json()["statuses"], response.json()["rejected"]) == (3, 5)

    rows = status_rows(served.gateway)
    accepted = [(row.wamid, row.status) for row in rows if row.status != "rejected"]
    assert accepted == [
        ("wamid.OUT1", "sent"),
        ("wamid.OUT1", "delivered"),
        ("wamid.OUT2", "failed"),
    ]
    rejected = [row for row in rows if row.status == "rejected"]
    assert len(rejected) == 5
    assert all(
        len(row.wamid) <= 400 and row.errors and "plugway_rejected" in row.errors
        for row in rejected
    )
    assert any("timestamp" in row.errors for row in rejected if row.wamid == "wamid.OUT3")
    [out2] = [row for row in outbound_rows(served.gateway) if row.wamid == "wamid.OUT2"]
    assert out2.status == "failed" and "131047: Re-engagement" in out2.last_error

    again = await served.post_delivery(payload)
    assert again.status_code == 200
    assert (again.json()["statuses"], again.json()["rejected"]) == (0, 5)
    assert len(status_rows(served.gateway)) == len(rows)


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"entry": "not a list"},
        {"object": "whatsapp_business_account", "entry": [1, None, "x", {"changes": "x"}]},
        {"entry": [{"changes": [1, {"value": "x"}, {"value": {"metadata": 5}}, {"value": []}]}]},
    ],
    ids=["empty", "entry-string", "entries-of-wrong-types", "changes-of-wrong-types"],
)
async def test_a_signed_object_without_events_is_a_200(
    make_settings: Callable[..., Settings], serve: Serve, payload: dict[str, Any]
) -> None:
    served = await serve(make_settings())
    response = await served.post_delivery(payload)
    assert response.status_code == 200, response.text
    assert (response.json()["stored"], response.json()["rejected"]) == (0, 0)
    assert inbound_rows(served.gateway) == []


async def test_failed_lists_rejected_messages_with_their_reason(
    make_settings: Callable[..., Settings], serve: Serve, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings()
    served = await serve(settings)
    bad = {**text_message("15550003333", "x", wamid="wamid.BADTEXT"), "text": "a string"}
    response = await served.post_delivery(
        delivery_entries([change(SUPPORT_NUMBER, messages=[bad])])
    )
    assert response.status_code == 200
    assert await anyio.to_thread.run_sync(lambda: dead_letters(settings)) == 0
    out = capsys.readouterr().out
    assert "wamid.BADTEXT" in out and "rejected" in out and "15550003333" in out
    assert "'text' is a string, not an object" in out
