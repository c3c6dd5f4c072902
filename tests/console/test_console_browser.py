"""The console in a real browser: Chromium -> the real gateway (uvicorn, SQLite) -> the fake OpenAI upstream.

Each test works as an operator would, with the mouse and the keyboard, and
checks the outcome where it matters: the key minted in the page answers the
``openai`` SDK and is refused once revoked, the edited endpoint's new prompt
reaches the upstream, the tool card is on screen while the answer is still
streaming, the dead letter is back in the queue.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import openai
import orjson
import pytest
from sqlalchemy import insert, select

from runtime.storage.keys import mint_key
from runtime.storage.models import UsageRecord
from tests.console.browser import screenshot, sign_in
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.support import GatewayServer

if TYPE_CHECKING:
    from playwright.sync_api import Page

try:
    from playwright.sync_api import expect
except ImportError:  # the browser_context fixture says so: a skip locally, a failure under CI=true
    expect = None  # type: ignore[assignment]


def admin_api(server: GatewayServer, admin_key: str) -> httpx.Client:
    return httpx.Client(base_url=f"{server.url}/admin/v1", headers={"Authorization": f"Bearer {admin_key}"}, timeout=20)


# -- signing in ----------------------------------------------------------------------------------


def test_sign_in_refuses_wrong_keys_and_keeps_the_key_in_the_tab(page: Page, console_server: GatewayServer, admin_key: str) -> None:
    page.goto(f"{console_server.url}/console/keys")
    expect(page).to_have_url(re.compile(r"/console/sign-in\?next=%2Fconsole%2Fkeys$"))
    field = page.get_by_label("Admin key")
    expect(field).to_be_focused()
    error = page.locator("#sign-in-error")

    field.fill("pwa_not-a-key")
    field.press("Enter")
    expect(error).to_have_text("This admin key is unknown or revoked.")
    expect(field).to_have_attribute("aria-invalid", "true")

    field.fill(console_server.mint("shop"))
    page.get_by_role("button", name="Sign in").click()
    expect(error).to_contain_text("That is a gateway key")
    screenshot(page, "sign-in")

    field.fill(admin_key)
    field.press("Enter")
    expect(page).to_have_url(f"{console_server.url}/console/keys")
    expect(page.get_by_role("heading", name="Keys", exact=True)).to_be_visible()
    # Kept for this tab only: not in localStorage, not in a cookie.
    assert page.evaluate("sessionStorage.getItem('plugway.console.adminKey')") == admin_key
    assert page.evaluate("localStorage.length") == 0 and page.context.cookies() == []

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/console/sign-in$"))
    assert page.evaluate("sessionStorage.length") == 0
    page.goto(f"{console_server.url}/console")
    expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))


# -- keys -------------------------------------------------------------------------------------------


def test_mint_a_key_use_it_edit_it_and_revoke_it(page: Page, console_server: GatewayServer, admin_key: str, upstream: FakeOpenAI) -> None:
    sign_in(page, console_server, admin_key, "/console/keys")
    dialog = page.locator("#key-dialog")
    page.get_by_role("button", name="Mint a key").click()
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")  # closes, nothing minted
    expect(dialog).to_be_hidden()

    page.get_by_role("button", name="Mint a key").click()
    dialog.get_by_label("Organisation", exact=True).select_option("shop")
    dialog.get_by_label("Requests per minute", exact=True).fill("100")
    dialog.get_by_label("embeddings").uncheck()
    dialog.get_by_label("mcp", exact=False).uncheck()
    dialog.locator("#key-models").get_by_text("gpt-test").click()
    expect(dialog.get_by_label("Only these:")).to_be_checked()
    name = dialog.get_by_label("Name", exact=True)
    name.fill("website")
    name.press("Enter")  # Enter submits the form

    created = page.locator("#key-created-dialog")
    expect(created).to_be_visible()
    expect(created).to_contain_text("only time it is shown")
    secret = page.locator("#new-key").input_value()
    assert secret.startswith("pw_")
    screenshot(page, "key-minted")
    created.get_by_role("button", name="Done").click()
    expect(created).to_be_hidden()
    expect(page.locator("#new-key")).to_have_value("")  # the secret leaves the page (on the dialog's close event, a task later)

    row = page.locator("#keys tbody tr", has_text="website")
    expect(row).to_contain_text("chat")
    expect(row).to_contain_text("gpt-test")
    expect(row).to_contain_text("100 rpm")
    screenshot(page, "keys")

    client = openai.OpenAI(base_url=console_server.base_url, api_key=secret, max_retries=0, timeout=20)
    upstream.enqueue(Reply(text="Hello from upstream."))
    answer = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "Hello from upstream."
    with pytest.raises(openai.PermissionDeniedError):  # the allow-list chosen in the form holds
        client.chat.completions.create(model="gpt-other", messages=[{"role": "user", "content": "hi"}])

    row.get_by_role("button", name="Edit").click()
    expect(dialog.get_by_label("Requests per minute", exact=True)).to_have_value("100")
    dialog.get_by_label("Requests per minute", exact=True).fill("")
    dialog.get_by_label("Every model of the organisation").check()
    dialog.get_by_role("button", name="Save changes").click()
    expect(dialog).to_be_hidden()
    expect(row).to_contain_text("no limits")
    key_id = row.get_attribute("data-key-id")
    with admin_api(console_server, admin_key) as api:
        stored = api.get(f"/keys/{key_id}").json()
    assert (stored["rpm"], stored["models"], stored["scopes"]) == (None, None, ["chat"])

    # Revoking asks first; Cancel keeps the key.
    confirm = page.locator("#confirm-dialog")
    row.get_by_role("button", name="Revoke").click()
    expect(confirm).to_be_visible()
    expect(confirm).to_contain_text("cannot be undone")
    expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    expect(row).to_be_visible()
    row.get_by_role("button", name="Revoke").click()
    confirm.get_by_role("button", name="Revoke key").click()
    expect(confirm).to_be_hidden()
    expect(row).to_have_count(0)

    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    page.get_by_label("Show revoked").check()
    expect(page.locator("#keys tbody tr", has_text="website")).to_contain_text("revoked")


def test_form_errors_are_shown_in_place(page: Page, console_server: GatewayServer, admin_key: str) -> None:
    sign_in(page, console_server, admin_key, "/console/keys")
    page.get_by_role("button", name="Mint a key").click()
    dialog = page.locator("#key-dialog")
    rpm = dialog.get_by_label("Requests per minute", exact=True)
    rpm.fill("-3")
    rpm.press("Enter")
    expect(dialog.locator("#key-form-error")).to_contain_text("whole number")
    expect(rpm).to_have_attribute("aria-invalid", "true")
    expect(rpm).to_be_focused()
    rpm.fill("5")
    expect(rpm).not_to_have_attribute("aria-invalid", "true")
    for scope in ("chat", "embeddings", "mcp"):
        dialog.locator(f"input[name=scopes][value={scope}]").uncheck()
    dialog.get_by_role("button", name="Mint key").click()
    expect(dialog.locator("#key-form-error")).to_contain_text("at least one scope")
    expect(dialog).to_be_visible()


# -- endpoints --------------------------------------------------------------------------------------


def test_edit_an_endpoint_then_call_it_and_try_it_in_the_playground(page: Page, console_server: GatewayServer, admin_key: str, upstream: FakeOpenAI) -> None:
    sign_in(page, console_server, admin_key, "/console/endpoints?organisation=shop")
    dialog = page.locator("#endpoint-dialog")

    # The YAML endpoint is shown, read-only.
    yaml_row = page.locator("#endpoints tbody tr[data-slug=yaml-helper]")
    expect(yaml_row).to_contain_text("YAML")
    expect(yaml_row.get_by_role("button", name="Delete")).to_have_count(0)
    yaml_row.get_by_role("button", name="View").click()
    expect(dialog.locator("#endpoint-read-only")).to_be_visible()
    expect(dialog.get_by_label("System prompt", exact=True)).to_be_disabled()
    expect(dialog.get_by_role("button", name="Save changes")).to_be_hidden()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    page.get_by_role("button", name="New endpoint").click()
    dialog.get_by_label("Slug", exact=True).fill("faq")
    dialog.get_by_label("Model", exact=True).select_option("gpt-test")
    dialog.get_by_label("System prompt", exact=True).fill("Answer FAQs.")
    dialog.get_by_label("Only these (none ticked: no tools):").check()
    dialog.get_by_role("button", name="Create endpoint").click()
    row = page.locator("#endpoints tbody tr[data-slug=faq]")
    expect(row).to_contain_text("stored")

    row.get_by_role("button", name="Edit").click()
    expect(dialog.get_by_label("System prompt", exact=True)).to_have_value("Answer FAQs.")
    dialog.get_by_label("System prompt", exact=True).fill("Answer FAQs in one sentence.")
    screenshot(page, "endpoint-dialog")
    dialog.get_by_role("button", name="Save changes").click()
    expect(dialog).to_be_hidden()
    screenshot(page, "endpoints")

    key = console_server.mint("shop")
    upstream.enqueue(Reply(text="Nine to five."))
    answer = httpx.post(f"{console_server.url}/api/shop/faq", json={"message": "hours?"}, headers={"Authorization": f"Bearer {key}"}, timeout=20)
    assert answer.status_code == 200, answer.text
    assert answer.json()["content"] == "Nine to five."
    assert upstream.requests[-1]["messages"][0] == {"role": "system", "content": "Answer FAQs in one sentence."}
    assert "tools" not in upstream.requests[-1]  # "only these", none ticked: no tools

    row.get_by_role("link", name="Try").click()
    expect(page).to_have_url(re.compile(r"/console/playground\?organisation=shop&endpoint=faq$"))
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#target-endpoint")).to_be_checked()
    expect(page.locator("#playground-endpoint")).to_have_value("faq")
    upstream.enqueue(Reply(text="We open at nine."))
    page.get_by_label("Message", exact=True).fill("When do you open?")
    page.get_by_label("Message", exact=True).press("Enter")
    expect(page.locator(".turn.assistant[data-state=done] .answer")).to_have_text("We open at nine.")
    assert upstream.requests[-1]["messages"][0]["content"] == "Answer FAQs in one sentence."

    # Deleting asks first, then the endpoint is gone everywhere.
    page.goto(f"{console_server.url}/console/endpoints?organisation=shop")
    row.get_by_role("button", name="Delete").click()
    page.locator("#confirm-dialog").get_by_role("button", name="Delete endpoint").click()
    expect(row).to_have_count(0)
    gone = httpx.post(f"{console_server.url}/api/shop/faq", json={"message": "hours?"}, headers={"Authorization": f"Bearer {key}"}, timeout=20)
    assert gone.status_code == 404


# -- the playground ---------------------------------------------------------------------------------


def test_the_tool_card_is_on_screen_before_the_answer_completes(page: Page, console_server: GatewayServer, admin_key: str, upstream: FakeOpenAI) -> None:
    final = "17 times 23 is 391: the calculator worked it out while you were watching this card."
    upstream.enqueue(
        Reply(tool_calls=[("calculator__evaluate", {"expression": "17 * 23"})]),
        # About 3 s of streaming after the tool: plenty of time to see the card beside a half answer.
        Reply(text=final, chunk_delay_s=0.2),
    )
    sign_in(page, console_server, admin_key, "/console/playground?organisation=shop&model=gpt-test")
    message = page.get_by_label("Message", exact=True)
    expect(message).to_be_focused()
    message.fill("What is 17 * 23?")
    message.press("Enter")

    turn = page.locator(".turn.assistant").last
    card = turn.locator(".tool-card")
    expect(card).to_have_attribute("data-state", "ok")
    # The card, with its arguments, result and duration, while the answer is still arriving.
    answer = turn.locator(".answer")
    expect(answer).to_contain_text("17 times")
    seen = page.evaluate(
        """() => {
            const turn = [...document.querySelectorAll('.turn.assistant')].at(-1);
            return {state: turn.dataset.state, answer: turn.querySelector('.answer')?.textContent ?? ''};
        }"""
    )
    assert seen["state"] == "streaming" and seen["answer"] != final, seen
    expect(card.locator(".tool-card-name")).to_have_text("calculator · evaluate")
    expect(card.locator(".tool-arguments")).to_contain_text('"expression": "17 * 23"')
    expect(card.locator(".tool-output")).to_contain_text('"result": 391')
    expect(card.locator(".tool-duration")).to_have_text(re.compile(r"^\d+ ms$|^\d+\.\d\d s$"))

    expect(turn).to_have_attribute("data-state", "done")
    expect(answer).to_have_text(final)
    expect(turn.locator(".turn-meta")).to_contain_text("2 rounds")
    screenshot(page, "playground")
    # The conversation goes on: the second turn carries the first one to the model.
    upstream.enqueue(Reply(text="You are welcome."))
    message.fill("Thanks!")
    message.press("Enter")
    expect(page.locator(".turn.assistant").nth(1)).to_have_attribute("data-state", "done")
    sent = [m["content"] for m in upstream.requests[-1]["messages"] if m["role"] in ("user", "assistant") and m.get("content")]
    assert sent == ["What is 17 * 23?", final, "Thanks!"]


def test_an_endpoint_that_does_not_stream_can_still_be_tried(page: Page, console_server: GatewayServer, admin_key: str, upstream: FakeOpenAI) -> None:
    """``stream: false`` forbids streaming to the endpoint's callers; the operator's playground still sees the run."""
    with admin_api(console_server, admin_key) as api:
        made = api.post("/endpoints", json={"organisation": "shop", "slug": "batch", "model": "gpt-test", "stream": False, "plugins": []})
        assert made.status_code == 201, made.text
    upstream.enqueue(Reply(text="Done in one go."))
    sign_in(page, console_server, admin_key, "/console/playground?organisation=shop&endpoint=batch")
    page.get_by_label("Message", exact=True).fill("Summarise this.")
    page.get_by_label("Message", exact=True).press("Enter")
    turn = page.locator(".turn.assistant").last
    expect(turn).not_to_have_attribute("data-state", "streaming")
    expect(turn.locator(".alert")).to_have_count(0)
    expect(turn.locator(".answer")).to_have_text("Done in one go.")


# -- plugins ----------------------------------------------------------------------------------------


def test_try_a_tool_with_the_arguments_form_and_as_json(page: Page, console_server: GatewayServer, admin_key: str) -> None:
    sign_in(page, console_server, admin_key, "/console/plugins?organisation=shop")
    card = page.locator("section[data-plugin=calculator]")
    expect(card).to_contain_text("loaded")
    expect(page.locator("#health-status")).to_have_text("ready")
    card.get_by_role("button", name="Try calculator__evaluate").click()
    dialog = page.locator("#tool-dialog")
    expression = dialog.get_by_label("expression")
    expect(expression).to_be_focused()
    expression.fill("6*7")
    expression.press("Enter")
    expect(dialog.locator("#tool-result-status")).to_have_text("ok")
    expect(dialog.locator("#tool-result-content")).to_contain_text('"result": 42')
    screenshot(page, "plugins")

    dialog.get_by_role("tab", name="JSON").click()
    arguments = dialog.get_by_label("Arguments (a JSON object)")
    assert orjson.loads(arguments.input_value()) == {"expression": "6*7"}
    arguments.fill('{"expr": 1}')
    dialog.get_by_role("button", name="Run tool").click()
    expect(dialog.locator("#tool-result-status")).to_have_text("error")
    expect(dialog.locator("#tool-result-content")).to_contain_text("schema")
    arguments.fill("{not json")
    dialog.get_by_role("button", name="Run tool").click()
    expect(dialog.locator("#tool-form-error")).to_contain_text("must be valid JSON")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


# -- WhatsApp ---------------------------------------------------------------------------------------


def _whatsapp_rows(server: GatewayServer) -> tuple[int, int]:
    from workers.whatsapp.models import WHATSAPP_TABLES, InboundStatus

    inbound, outbound = WHATSAPP_TABLES[0], WHATSAPP_TABLES[1]
    now = time.time()
    base: dict[str, Any] = {"app_id": "shop-support", "conversation_key": "shop-support:15551234", "sender": "15551234", "sender_name": "Ada", "message_type": "text", "raw": "{}", "next_attempt_at": 0.0, "attempts": 1, "reply_in_history": False}
    trace = {"rounds": 2, "tool_calls": [{"round": 1, "name": "calculator__evaluate", "duration_ms": 3.2, "ok": True}]}
    with server.gateway.engine.begin() as connection:
        answered = connection.execute(
            insert(inbound).returning(inbound.c.id),
            {**base, "wamid": "wamid.answered", "text": "What is 6 * 7?", "message_ts": int(now) - 3600, "received_at": now - 3600, "status": InboundStatus.answered,
             "reply_text": "It is 42.", "reply_trace": orjson.dumps(trace).decode(), "finished_at": now - 3590},
        ).scalar_one()
        connection.execute(insert(outbound), {"wamid": "wamid.out1", "app_id": "shop-support", "inbound_id": answered, "part_index": 0, "recipient": "15551234", "body": "It is 42.", "status": "delivered", "created_at": now - 3590, "updated_at": now - 3580})
        dead = connection.execute(
            insert(inbound).returning(inbound.c.id),
            {**base, "wamid": "wamid.dead", "text": "Where is my order?", "message_ts": int(now) - 1800, "received_at": now - 1800, "status": InboundStatus.failed,
             "attempts": 5, "last_error": "graph: 131000 something went wrong", "finished_at": now - 1500},
        ).scalar_one()
        connection.execute(
            insert(inbound),
            {**base, "wamid": "wamid.bad", "text": None, "message_ts": int(now) - 600, "received_at": now - 600, "status": InboundStatus.rejected, "last_error": "malformed: no text", "finished_at": now - 600},
        )
    return answered, dead


def test_conversations_and_requeueing_a_dead_letter(page: Page, console_server: GatewayServer, admin_key: str) -> None:
    from workers.whatsapp.models import WHATSAPP_TABLES

    _answered, dead = _whatsapp_rows(console_server)
    sign_in(page, console_server, admin_key, "/console/whatsapp")
    page.get_by_role("button", name=re.compile("^Ada")).click()
    conversation = page.locator("#conversation")
    expect(conversation.locator(".wa-in").first).to_contain_text("What is 6 * 7?")
    expect(conversation.locator(".wa-out")).to_contain_text("It is 42.")
    expect(conversation.locator(".wa-out")).to_contain_text("delivered")
    expect(conversation.locator(".wa-tools")).to_contain_text("calculator__evaluate")
    screenshot(page, "whatsapp")

    page.get_by_role("tab", name=re.compile("Dead letters")).click()
    letter = page.locator(f"#dead-letters tr[data-letter-id='{dead}']")
    expect(letter).to_contain_text("graph: 131000")
    expect(page.locator("#dead-letters tbody tr", has_text="malformed")).to_contain_text("not requeueable")
    screenshot(page, "dead-letters")
    letter.get_by_role("button", name="Requeue").click()
    confirm = page.locator("#confirm-dialog")
    expect(confirm).to_contain_text("Where is my order?")
    confirm.get_by_role("button", name="Requeue").click()
    expect(confirm).to_be_hidden()
    expect(letter).to_have_count(0)
    expect(page.locator(".toast")).to_contain_text("Requeued")

    inbound = WHATSAPP_TABLES[0]
    with console_server.gateway.engine.connect() as connection:
        status, attempts = connection.execute(select(inbound.c.status, inbound.c.attempts).where(inbound.c.id == dead)).one()
    assert (status, attempts) == ("pending", 0)


# -- audit log and overview ----------------------------------------------------------------------------


def test_the_audit_log_shows_who_did_what(page: Page, console_server: GatewayServer, admin_key: str) -> None:
    with admin_api(console_server, admin_key) as api:
        made = api.post("/keys", json={"organisation": "shop", "name": "audited"}).json()
        api.patch(f"/keys/{made['id']}", json={"rpm": 7})
    sign_in(page, console_server, admin_key, "/console/audit")
    row = page.locator("#audit tbody tr[data-action='key.update']", has_text=made["id"]).first
    expect(row).to_contain_text("rpm: 7")
    expect(row).to_contain_text("127.0.0.1")
    expect(row).to_contain_text("console-tests")
    page.get_by_label("Action").select_option("key.create")
    expect(page.locator("#audit tbody tr[data-action='key.update']")).to_have_count(0)
    expect(page.locator("#audit tbody tr", has_text=made["id"])).to_contain_text("key.create")
    screenshot(page, "audit")


def _seed_usage(server: GatewayServer) -> dict[str, Any]:
    """Two weeks of traffic on two keys and two models, some of it failed, as the usage writer stores it."""
    table = UsageRecord.__table__  # type: ignore[attr-defined]
    _secret, busy_key = mint_key(server.gateway.engine, organisation_id="shop", name="mobile-app")
    _secret, quiet_key = mint_key(server.gateway.engine, organisation_id="shop", name="batch-jobs")
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    rows = []
    for days_ago in range(1, 13):
        for index in range(3 + (days_ago * 7) % 9):
            rows.append(
                {
                    "request_id": f"seed-{days_ago}-{index}", "organisation_id": "shop", "key_id": busy_key.id if index % 4 else quiet_key.id,
                    "source": "api", "model": "gpt-test" if index % 3 else "gpt-other", "prompt_tokens": 400 + 37 * index, "completion_tokens": 120 + 11 * index,
                    "total_tokens": 520 + 48 * index, "cost_usd": 0.00064 + 0.00006 * index, "status": "upstream_error" if (index + days_ago) % 11 == 0 else "ok",
                    "created_at": today - timedelta(days=days_ago, minutes=index),
                }
            )
    with server.gateway.engine.begin() as connection:
        connection.execute(insert(table), rows)
    return {"requests": len(rows), "busy": busy_key, "days": len({r["created_at"].date() for r in rows})}


def test_the_overview_charts_usage_per_day_and_the_busiest_keys(page: Page, console_server: GatewayServer, admin_key: str, upstream: FakeOpenAI) -> None:
    seeded = _seed_usage(console_server)
    with admin_api(console_server, admin_key) as api:
        before = api.get("/usage", params={"organisation": "shop", "start": (datetime.now(UTC) - timedelta(days=13)).date().isoformat()}).json()["totals"]["requests"]
    assert before >= seeded["requests"]
    sign_in(page, console_server, admin_key, "/console?organisation=shop")
    expect(page.locator("#total-requests")).to_have_text(f"{before:,}")
    expect(page.locator("#no-usage")).to_be_hidden()
    # One bar per day with traffic, each with its tooltip.
    bars = page.locator("#chart-requests svg rect.bar-a")
    assert bars.count() >= seeded["days"]
    expect(page.locator("#chart-tokens svg rect.bar-b").first).to_be_attached()
    expect(page.locator("#chart-errors svg circle.point").first).to_be_attached()
    expect(page.locator("#busiest-keys tbody tr").first).to_contain_text("mobile-app")
    expect(page.locator("#busiest-models tbody")).to_contain_text("gpt-other")
    expect(page.locator("#organisations tbody tr", has_text="shop")).to_contain_text("$50.00")

    # A request made now shows up on the next refresh.
    upstream.enqueue(Reply(text="Fresh."))
    openai.OpenAI(base_url=console_server.base_url, api_key=console_server.mint("shop"), max_retries=0).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}]
    )
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#total-requests")).to_have_text(f"{before + 1:,}")
    page.mouse.move(0, 0)  # no hover or focus ring in the picture
    page.evaluate("document.activeElement.blur()")
    screenshot(page, "overview")

    # One key's figures: totals and charts narrow to it, the busiest keys stay a ranking of all.
    busy = seeded["busy"]
    with admin_api(console_server, admin_key) as api:
        start = (datetime.now(UTC) - timedelta(days=13)).date().isoformat()
        only_busy = api.get("/usage", params={"organisation": "shop", "start": start, "key": busy.id}).json()["totals"]["requests"]
    assert 0 < only_busy < before
    page.get_by_label("Key").select_option(busy.id)
    expect(page.locator("#total-requests")).to_have_text(f"{only_busy:,}")
    expect(page.locator("#busiest-keys tbody")).to_contain_text("batch-jobs")
    page.get_by_label("Key").select_option("")
    expect(page.locator("#total-requests")).to_have_text(f"{before + 1:,}")


# -- the request log -------------------------------------------------------------------------------


def _wait_for_requests(server: GatewayServer, admin_key: str, count: int) -> None:
    deadline = time.monotonic() + 20
    with admin_api(server, admin_key) as api:
        while len(api.get("/requests", params={"limit": 200}).json()["data"]) < count:
            assert time.monotonic() < deadline, "the request log did not get the requests"
            time.sleep(0.05)


def test_find_a_failed_request_and_see_its_waterfall(page: Page, console_server: GatewayServer, admin_key: str, upstream: FakeOpenAI) -> None:
    client = openai.OpenAI(base_url=console_server.base_url, api_key=console_server.mint("shop"), max_retries=0)
    upstream.enqueue(Reply(text="Hello."))
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    upstream.enqueue(Reply(tool_calls=[("calculator__evaluate", {"expression": "1840*0.125"})], prompt_tokens=310), Reply(text="230", delay_s=0.05))
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "What is 12.5% of 1,840?"}])
    upstream.enqueue(Reply(status=503, error_message="upstream overloaded"))
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="gpt-other", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=console_server.base_url, api_key="pw_not-a-key", max_retries=0).models.list()
    _wait_for_requests(console_server, admin_key, 4)

    # Click one: the Requests page. Every request, newest first, the failures' causes in sight.
    sign_in(page, console_server, admin_key, "/console/requests")
    rows = page.locator("#requests tbody tr")
    expect(rows.first).to_contain_text("invalid_api_key")
    assert rows.count() >= 4
    # Click two: only the failures.
    page.get_by_label("Status").select_option("error")
    expect(page.locator("#requests tbody tr[data-status='200']")).to_have_count(0)
    failed = page.locator("#requests tbody tr", has_text="gpt-other").first  # the newest
    expect(failed).to_contain_text("upstream")
    screenshot(page, "requests-failed")
    # Click three: the failed request, its cause and its timeline.
    failed.click()
    dialog = page.locator("#request-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#request-error")).to_contain_text("upstream")
    expect(page.locator("#waterfall .step[data-kind='round']")).to_have_count(1)
    page.get_by_role("button", name="Close").click()

    # By tool: the orchestrated request alone, opened as a waterfall of two rounds and the tool call between them.
    page.get_by_label("Status").select_option("")
    page.get_by_label("Tool").fill("calculator__evaluate")
    page.get_by_label("Tool").press("Enter")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("calculator__evaluate")
    rows.first.click()
    steps = page.locator("#waterfall .step")
    expect(steps).to_have_count(4)  # the request, round 1, the tool call, round 2
    expect(steps.nth(2)).to_have_attribute("data-kind", "tool")
    expect(steps.nth(2)).to_contain_text("calculator__evaluate")
    # The bars sit where they ran: each starts at or after the one before it.
    lefts = [float(steps.nth(i).locator(".span").evaluate("el => el.getBoundingClientRect().left")) for i in range(1, 4)]
    assert lefts == sorted(lefts)
    expect(page).to_have_url(re.compile(r"#request-\d+$"))
    page.mouse.move(0, 0)
    screenshot(page, "requests")
