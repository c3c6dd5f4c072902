"""``/mcp`` serves its organisation's MCP servers' resources, prompts, completions and elicitation.

The ``mcp`` SDK's client over streamable HTTP against a real gateway on
uvicorn, whose plugins are real SDK servers: the test server over stdio in
the 2026 protocol (``tk``), over stdio in the 2025 handshake era (``tkl``)
and over streamable HTTP (``web``).
"""

from __future__ import annotations

import asyncio
import base64
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import openai
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from sqlmodel import Session, select

from runtime.storage.models import UsageRecord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.mcp.mcp_helpers import HttpServer, start_http_server
from tests.support import GatewayServer, make_settings

ROOT = Path(__file__).resolve().parents[2]
TEST_SERVER = ROOT / "tests" / "fixtures" / "mcp_test_server.py"
MODES = ["auto", "legacy"]


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    server = start_http_server(tmp_path_factory.mktemp("web-markers"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def served(upstream_server: FakeOpenAI, web_server: HttpServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    stdio = {"command": [sys.executable, str(TEST_SERVER)]}
    legacy = {"command": [sys.executable, str(TEST_SERVER), "--legacy"]}
    web = {"url": web_server.url, "headers": {"Authorization": f"Bearer {web_server.token}"}}
    data = tmp_path_factory.mktemp("offerings")
    # The bundled CRM server declares the resources capability but has no resource.
    crm = {"command": [sys.executable, "-m", "mcp_servers.support_crm"], "env": {"SUPPORT_CRM_DB": str(data / "crm.db")}, "cwd": str(ROOT)}
    settings = make_settings(
        data,
        upstream_server.base_url,
        plugins=[
            {"id": "clock"},
            {"id": "tk", "mcp": stdio},
            {"id": "tkl", "mcp": legacy},
            {"id": "web", "mcp": web},
            {"id": "crm", "mcp": crm},
        ],
        extra_orgs=[{"id": "beta", "plugins": [{"id": "tk", "mcp": stdio}]}],
        models=[
            {"id": "gpt-test", "provider": "upstream", "upstream_model": "gpt-4o-mini"},
            {"id": "gpt-audio", "provider": "upstream", "upstream_model": "gpt-4o-audio-preview", "audio": True},
        ],
    )
    server = GatewayServer(settings).start()
    yield server
    server.stop()


@asynccontextmanager
async def connected(server: GatewayServer, key: str, *, mode: str = "auto", **options: Any) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=20) as http:
        async with Client(streamable_http_client(f"{server.url}/mcp", http_client=http), mode=mode, **options) as client:  # type: ignore[arg-type]
            yield client


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def usage_models(server: GatewayServer) -> list[tuple[str, str]]:
    server.flush_usage()
    with Session(server.gateway.engine) as session:
        rows = session.exec(select(UsageRecord).where(UsageRecord.source == "mcp").order_by(UsageRecord.id))
        return [(row.model, row.status) for row in rows]


# -- resources ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_every_servers_resources_templates_and_prompts_are_listed_under_its_plugin(served: GatewayServer, mode: str) -> None:
    async with connected(served, served.mint(), mode=mode) as client:
        capabilities = client.server_capabilities
        resources = (await client.list_resources()).resources
        templates = (await client.list_resource_templates()).resource_templates
        prompts = (await client.list_prompts()).prompts
    assert capabilities.resources is not None and capabilities.prompts is not None and capabilities.completions is not None
    uris = {str(resource.uri) for resource in resources}
    for plugin in ("tk", "tkl", "web"):
        assert {f"plugway://{plugin}/notes://welcome", f"plugway://{plugin}/images://pixel.png"} <= uris
    assert not any(uri.startswith("plugway://clock/") for uri in uris)  # a Python plugin has no resources
    welcome = next(r for r in resources if str(r.uri) == "plugway://web/notes://welcome")
    assert welcome.name == "web__welcome" and welcome.description == "How to use the notes"
    assert {t.uri_template for t in templates} == {f"plugway://{p}/notes://{{topic}}" for p in ("tk", "tkl", "web")}
    assert {p.name for p in prompts} == {"tk__summarise", "tkl__summarise", "web__summarise"}
    summarise = next(p for p in prompts if p.name == "web__summarise")
    assert [a.name for a in summarise.arguments or ()] == ["topic"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_resource_is_read_from_the_server_its_uri_names_and_recorded(served: GatewayServer, mode: str) -> None:
    async with connected(served, served.mint(), mode=mode) as client:
        welcome = await client.read_resource("plugway://tkl/notes://welcome")
        templated = await client.read_resource("plugway://web/notes://billing")
        pixel = await client.read_resource("plugway://tk/images://pixel.png")
    (text,) = welcome.contents
    assert isinstance(text, types.TextResourceContents) and text.text.startswith("Welcome")
    assert str(text.uri) == "plugway://tkl/notes://welcome"
    (note,) = templated.contents
    assert isinstance(note, types.TextResourceContents) and note.text == "Everything about billing."
    (blob,) = pixel.contents
    assert isinstance(blob, types.BlobResourceContents) and blob.mime_type == "image/png"
    assert base64.b64decode(blob.blob).startswith(b"\x89PNG")
    records = usage_models(served)
    for model in ("tkl__read_resource", "web__read_resource", "tk__read_resource"):
        assert (model, "ok") in records


async def test_a_uri_outside_the_organisations_plugins_is_an_unknown_resource(served: GatewayServer) -> None:
    async with connected(served, served.mint("beta")) as beta:
        listed = {str(r.uri) for r in (await beta.list_resources()).resources}
        own = await beta.read_resource("plugway://tk/notes://welcome")
        errors = []
        for uri in ("plugway://tkl/notes://welcome", "plugway://web/notes://welcome", "notes://welcome", "plugway://tk"):
            with pytest.raises(MCPError) as info:
                await beta.read_resource(uri)
            errors.append(info.value)
    assert listed == {"plugway://tk/notes://welcome", "plugway://tk/images://pixel.png", "plugway://tk/files://report.csv"}
    assert own.contents
    assert all(error.code == types.INVALID_PARAMS and "Unknown resource" in error.message for error in errors)


@pytest.mark.parametrize("plugin", ["tk", "tkl", "web"])
async def test_a_listener_hears_of_a_subscribed_resources_change_under_its_public_uri(served: GatewayServer, plugin: str) -> None:
    uri = f"plugway://{plugin}/notes://billing"
    async with connected(served, served.mint()) as client, connected(served, served.mint("beta")) as beta:
        async with client.listen(resource_subscriptions=[uri]) as subscription, beta.listen(
            resource_subscriptions=["plugway://tk/notes://billing"]
        ) as other:
            assert subscription.honored.resource_subscriptions == [uri]
            touched = await client.call_tool(f"{plugin}__touch_note", {"topic": "billing"})
            assert text_of(touched) == "touched notes://billing"
            event = await asyncio.wait_for(anext(subscription), timeout=10)
            assert type(event).__name__ == "ResourceUpdated" and event.uri == uri  # type: ignore[attr-defined]
            with pytest.raises(TimeoutError):  # beta's own tk connection saw no change
                await asyncio.wait_for(anext(other), timeout=1.5)


@pytest.mark.parametrize("plugin", ["tk", "tkl", "web"])
async def test_a_handshake_session_subscribed_to_a_resource_is_told_of_its_change(served: GatewayServer, plugin: str) -> None:
    uri = f"plugway://{plugin}/notes://bugs"
    updated: asyncio.Queue[str] = asyncio.Queue()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updated.put_nowait(str(message.params.uri))

    async with connected(served, served.mint(), mode="legacy", message_handler=on_message) as client:
        assert client.server_capabilities.resources is not None and client.server_capabilities.resources.subscribe
        await client.subscribe_resource(uri)
        await client.call_tool(f"{plugin}__touch_note", {"topic": "bugs"})
        assert await asyncio.wait_for(updated.get(), timeout=10) == uri
        assert updated.empty()  # told once
        await client.unsubscribe_resource(uri)
        await client.call_tool(f"{plugin}__touch_note", {"topic": "bugs"})
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(updated.get(), timeout=1.5)
        with pytest.raises(MCPError):
            await client.subscribe_resource("plugway://nobody/notes://bugs")


async def test_a_resource_the_server_does_not_have_is_its_error(served: GatewayServer) -> None:
    async with connected(served, served.mint()) as client:
        with pytest.raises(MCPError) as info:
            await client.read_resource("plugway://web/nothing://here")
    assert "nothing://here" in info.value.message


async def test_read_resource_is_offered_only_for_servers_that_have_resources(served: GatewayServer) -> None:
    async with connected(served, served.mint()) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
    assert {"tk__read_resource", "tkl__read_resource", "web__read_resource"} <= names
    assert "crm__lookup_customer" in names
    assert "crm__read_resource" not in names and "clock__read_resource" not in names


@pytest.mark.parametrize(
    ("call", "arguments"),
    [("tk__picture", {"caption": "tiny"}), ("web__read_resource", {"uri": "images://pixel.png"})],
    ids=["tool-image", "binary-resource"],
)
def test_an_mcp_servers_image_reaches_a_vision_model_as_an_image_part(
    served: GatewayServer, upstream: FakeOpenAI, call: str, arguments: dict[str, Any]
) -> None:
    upstream.enqueue(Reply(tool_calls=[(call, arguments)]), Reply(text="I see it"))
    client = openai.OpenAI(base_url=served.base_url, api_key=served.mint(), max_retries=0, timeout=20)
    reply = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "look"}])
    assert reply.choices[0].message.content == "I see it"
    messages = upstream.requests[1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "user"]
    assert isinstance(messages[2]["content"], str) and "image/png" in messages[2]["content"]
    image = messages[3]["content"][1]
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/png;base64,iVBOR")


def test_an_mcp_servers_sound_reaches_a_model_that_hears_as_an_input_audio_part(served: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("tk__beep", {})]), Reply(text="I hear it"))
    client = openai.OpenAI(base_url=served.base_url, api_key=served.mint(), max_retries=0, timeout=20)
    client.chat.completions.create(model="gpt-audio", messages=[{"role": "user", "content": "listen"}])
    messages = upstream.requests[1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "user"]
    assert "a short beep" in messages[2]["content"] and "[audio: audio/wav, 52 bytes]" in messages[2]["content"]
    sound = messages[3]["content"][1]
    assert sound["type"] == "input_audio" and sound["input_audio"]["format"] == "wav"
    assert base64.b64decode(sound["input_audio"]["data"]).startswith(b"RIFF")


def test_a_model_that_does_not_hear_reads_the_sounds_description(served: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("tk__beep", {})]), Reply(text="I read about it"))
    client = openai.OpenAI(base_url=served.base_url, api_key=served.mint(), max_retries=0, timeout=20)
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "listen"}])
    messages = upstream.requests[1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[2]["content"] == "a short beep\n[audio: audio/wav, 52 bytes]"


async def test_a_sound_reaches_an_mcp_client_as_audio_content(served: GatewayServer) -> None:
    async with connected(served, served.mint()) as client:
        result = await client.call_tool("tk__beep", {})
    (sound,) = [block for block in result.content if isinstance(block, types.AudioContent)]
    assert sound.mime_type == "audio/wav" and base64.b64decode(sound.data).startswith(b"RIFF")


# -- prompts and completion --------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_prompt_is_filled_in_by_its_server_and_recorded(served: GatewayServer, mode: str) -> None:
    async with connected(served, served.mint(), mode=mode) as client:
        prompt = await client.get_prompt("web__summarise", {"topic": "refunds"})
        legacy = await client.get_prompt("tkl__summarise", {"topic": "bugs"})
        with pytest.raises(MCPError) as unknown:
            await client.get_prompt("summarise", {"topic": "x"})
    (message,) = prompt.messages
    assert isinstance(message.content, types.TextContent) and message.content.text == "Summarise the notes about refunds."
    assert isinstance(legacy.messages[0].content, types.TextContent) and "bugs" in legacy.messages[0].content.text
    assert unknown.value.code == types.INVALID_PARAMS
    assert ("prompt:web__summarise", "ok") in usage_models(served)


@pytest.mark.parametrize("plugin", ["tk", "tkl", "web"])
async def test_completion_of_prompt_and_template_arguments_comes_from_the_owning_server(served: GatewayServer, plugin: str) -> None:
    async with connected(served, served.mint()) as client:
        for_prompt = await client.complete(types.PromptReference(name=f"{plugin}__summarise"), {"name": "topic", "value": "b"})
        for_template = await client.complete(
            types.ResourceTemplateReference(uri=f"plugway://{plugin}/notes://{{topic}}"), {"name": "topic", "value": "re"}
        )
        with pytest.raises(MCPError):
            await client.complete(types.PromptReference(name="nobody__summarise"), {"name": "topic", "value": "b"})
    assert for_prompt.completion.values == ["billing", "bugs"]
    assert for_template.completion.values == ["refunds"]


async def test_a_servers_new_prompt_reaches_that_organisations_listeners_as_prompts_list_changed(served: GatewayServer) -> None:
    async with (
        connected(served, served.mint()) as client,
        connected(served, served.mint("beta")) as beta,
        client.listen(prompts_list_changed=True) as subscription,
        beta.listen(prompts_list_changed=True) as other,
    ):
        added = await client.call_tool("web__add_prompt", {"name": "fresh"})
        assert text_of(added) == "added prompt fresh"
        event = await asyncio.wait_for(anext(subscription), timeout=10)
        assert type(event).__name__ == "PromptsListChanged"
        assert "web__fresh" in {p.name for p in (await client.list_prompts(cache_mode="refresh")).prompts}
        with pytest.raises(TimeoutError):  # beta does not configure web
            await asyncio.wait_for(anext(other), timeout=1.5)


# -- elicitation -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("plugin", ["tk", "tkl", "web"])
async def test_a_servers_form_elicitation_reaches_the_client_and_its_answer_the_server(
    served: GatewayServer, mode: str, plugin: str
) -> None:
    asked: list[types.ElicitRequestParams] = []

    async def answer(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params)
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async with connected(served, served.mint(), mode=mode, elicitation_callback=answer) as client:
        result = await client.call_tool(f"{plugin}__greet", {"greeting": "Hello"})
    assert not result.is_error, text_of(result)
    assert text_of(result) == "Hello, Ada!"
    (question,) = asked
    assert isinstance(question, types.ElicitRequestFormParams) and question.message == "Hello! What is your name?"
    assert "name" in question.requested_schema["properties"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_servers_url_elicitation_reaches_a_client_that_declared_url_mode(served: GatewayServer, mode: str) -> None:
    asked: list[types.ElicitRequestParams] = []

    async def answer(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params)
        return types.ElicitResult(action="accept")

    async with connected(served, served.mint(), mode=mode, elicitation_callback=answer) as client:
        result = await client.call_tool("tkl__sign_in", {})
    assert text_of(result) == "sign-in: accept"
    (question,) = asked
    assert isinstance(question, types.ElicitRequestURLParams) and question.url == "https://example.test/sign-in"


@pytest.mark.parametrize("mode", MODES)
async def test_elicitation_is_declined_for_a_client_without_the_capability(served: GatewayServer, mode: str) -> None:
    async with connected(served, served.mint(), mode=mode) as client:
        result = await client.call_tool("tkl__greet", {"greeting": "Hello"})
    assert "Ada" not in text_of(result)
    assert "no person to ask" in text_of(result) or "decline" in text_of(result)


async def test_a_declined_form_reaches_the_server_as_declined(served: GatewayServer) -> None:
    async def answer(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="decline")

    async with connected(served, served.mint(), elicitation_callback=answer) as client:
        result = await client.call_tool("web__greet", {"greeting": "Hi"})
    assert text_of(result) == "no name given (decline)"


async def test_another_key_cannot_answer_a_parked_call(served: GatewayServer) -> None:
    """A 2026 client's request_state resumes only calls made with its own key."""
    front_door = next(route.endpoint for route in served.app.routes if getattr(route, "path", None) == "/mcp")  # type: ignore[attr-defined]
    asked = asyncio.Event()
    release = asyncio.Event()

    async def slow_answer(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.set()
        await release.wait()
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async with connected(served, served.mint(), elicitation_callback=slow_answer) as client:
        call = asyncio.ensure_future(client.call_tool("web__greet", {"greeting": "Hello"}))
        await asyncio.wait_for(asked.wait(), 10)
        (state,) = list(front_door.tools.parked._parked)
        async with connected(served, served.mint()) as intruder:
            with pytest.raises(MCPError) as info:
                await intruder.session.call_tool("web__greet", {"greeting": "Hello"}, request_state=state, input_responses={})  # type: ignore[call-arg]
        release.set()
        result = await call
    assert "requestState is unknown" in info.value.message
    assert text_of(result) == "Hello, Ada!"
