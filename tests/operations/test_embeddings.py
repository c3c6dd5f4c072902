"""POST /v1/embeddings through the official openai SDK: the fake upstream and the offline demo provider."""

from __future__ import annotations

import math

import httpx
import openai
import pytest

from runtime.providers.demo import demo_vector
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.support import Gateways, GatewayServer, wait_until

MODELS = [
    {"id": "gpt-test", "provider": "upstream"},
    {"id": "embed-small", "provider": "upstream", "upstream_model": "text-embedding-3-small", "embeddings": True,
     "fallbacks": ["embed-backup"], "price": {"input_per_mtok": 20.0}},
    {"id": "embed-backup", "provider": "backup", "upstream_model": "text-embedding-3-large", "embeddings": True},
    {"id": "demo-embed", "provider": "demo", "embeddings": True},
    {"id": "claude", "provider": "claude", "embeddings": True},
]


@pytest.fixture
def server(upstream: FakeOpenAI, gateways: Gateways) -> GatewayServer:
    providers = [
        {"id": "upstream", "kind": "openai", "base_url": upstream.base_url, "api_key": "sk-test-upstream", "max_retries": 0},
        {"id": "backup", "kind": "openai", "base_url": upstream.base_url, "api_key": "sk-test-upstream", "max_retries": 0},
        {"id": "demo", "kind": "demo"},
        {"id": "claude", "kind": "anthropic", "base_url": "http://127.0.0.1:9"},
    ]
    return gateways.start(providers=providers, models=MODELS)


def usage_rows(server: GatewayServer) -> list[dict[str, object]]:
    from sqlalchemy import text

    server.flush_usage()
    with server.gateway.engine.connect() as connection:
        rows = connection.execute(text("SELECT source, model, provider, prompt_tokens, completion_tokens, cost_usd, status FROM usage_records ORDER BY id"))
        return [dict(row._mapping) for row in rows]


def test_embeddings_from_the_openai_upstream(server: GatewayServer, upstream: FakeOpenAI) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint("acme"), max_retries=0)
    # The SDK asks for base64 by default and decodes it; floats on request.
    answer = client.embeddings.create(model="embed-small", input=["the cat sat", "on the mat"])
    floats = client.embeddings.create(model="embed-small", input="the cat sat", encoding_format="float", dimensions=8)
    assert [item.index for item in answer.data] == [0, 1] and answer.model == "embed-small"
    assert len(answer.data[0].embedding) == 16 and len(floats.data[0].embedding) == 8
    assert answer.data[0].embedding[:8] != answer.data[1].embedding[:8]
    assert answer.usage.prompt_tokens == 6 and answer.usage.total_tokens == 6
    assert upstream.requests[0] == {"model": "text-embedding-3-small", "input": ["the cat sat", "on the mat"], "encoding_format": "base64"}
    assert upstream.requests[1]["dimensions"] == 8 and upstream.requests[1]["encoding_format"] == "float"
    # Raw HTTP: the exact OpenAI shape, floats by default.
    raw = httpx.post(f"{server.base_url}/embeddings", json={"model": "embed-small", "input": [[1, 2, 3]]}, headers={"Authorization": client.api_key and f"Bearer {client.api_key}"}).json()
    assert set(raw) == {"object", "data", "model", "usage"} and raw["object"] == "list"
    assert set(raw["data"][0]) == {"object", "index", "embedding"} and isinstance(raw["data"][0]["embedding"][0], float)
    assert raw["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    rows = usage_rows(server)
    assert [(r["source"], r["model"], r["provider"], r["prompt_tokens"], r["completion_tokens"], r["status"]) for r in rows] == [
        ("embeddings", "embed-small", "upstream", 6, 0, "ok"),
        ("embeddings", "embed-small", "upstream", 3, 0, "ok"),
        ("embeddings", "embed-small", "upstream", 3, 0, "ok"),
    ]
    assert rows[0]["cost_usd"] == pytest.approx(6 * 20.0 / 1e6)


def test_a_failing_provider_falls_back(server: GatewayServer, upstream: FakeOpenAI) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint("acme"), max_retries=0)
    upstream.embedding_errors.append(Reply(status=503))
    answer = client.embeddings.create(model="embed-small", input="hello")
    assert len(answer.data) == 1
    assert [r["model"] for r in upstream.requests] == ["text-embedding-3-small", "text-embedding-3-large"]
    assert usage_rows(server)[0]["provider"] == "backup"
    upstream.embedding_errors.extend([Reply(status=500), Reply(status=500)])
    with pytest.raises(openai.APIStatusError) as failed:
        client.embeddings.create(model="embed-small", input="hello")
    assert failed.value.status_code == 502


def test_demo_vectors_are_deterministic_unit_vectors(server: GatewayServer) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint("acme"), max_retries=0)
    first = client.embeddings.create(model="demo-embed", input=["same words", "other words"], dimensions=32)
    again = client.embeddings.create(model="demo-embed", input="same words", dimensions=32)
    vector = first.data[0].embedding
    assert len(vector) == 32 and math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-5)
    assert again.data[0].embedding == pytest.approx(vector, abs=1e-6)
    assert vector == pytest.approx(demo_vector("same words", 32), abs=1e-6)
    assert first.data[1].embedding != pytest.approx(vector, abs=1e-3)
    raw = httpx.post(f"{server.base_url}/embeddings", json={"model": "demo-embed", "input": "x"}, headers={"Authorization": f"Bearer {client.api_key}"}).json()
    assert len(raw["data"][0]["embedding"]) == 256 and raw["plugway_demo"].startswith("[demo model]")


def test_refusals(server: GatewayServer, upstream: FakeOpenAI) -> None:
    key = server.mint("acme")
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as anthropic:
        client.embeddings.create(model="claude", input="hi")
    assert "kind 'anthropic'" in anthropic.value.message and anthropic.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as chat_only:
        client.embeddings.create(model="gpt-test", input="hi")
    assert "not configured for embeddings" in chat_only.value.message
    for body, param in (
        ({"model": "embed-small", "input": ""}, "input"),
        ({"model": "embed-small", "input": []}, "input"),
        ({"model": "embed-small", "input": [1.5]}, "input"),
        ({"model": "embed-small", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "embed-small", "input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x"}, "model"),
    ):
        response = httpx.post(f"{server.base_url}/embeddings", json=body, headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 400 and response.json()["error"]["param"] == param, body
    assert upstream.requests == []
    # Limits as for chat: RPM, and a key without the embeddings scope.
    limited = openai.OpenAI(base_url=server.base_url, api_key=server.mint("acme", rpm=1), max_retries=0)
    limited.embeddings.create(model="demo-embed", input="one")
    with pytest.raises(openai.RateLimitError):
        limited.embeddings.create(model="demo-embed", input="two")
    chat_key = openai.OpenAI(base_url=server.base_url, api_key=server.mint("acme", scopes=["chat"]), max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        chat_key.embeddings.create(model="demo-embed", input="hi")


def test_daily_tokens_count_embeddings(server: GatewayServer) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint("acme", daily_tokens=5), max_retries=0)
    client.embeddings.create(model="demo-embed", input=[[1, 2, 3, 4, 5, 6]])

    def refused() -> bool:
        try:
            client.embeddings.create(model="demo-embed", input=[[1]])
        except openai.RateLimitError:
            return True
        return False

    wait_until(refused, "the day's tokens counted, and the next embedding refused", within_s=5)


def test_models_that_embed_say_so(server: GatewayServer) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint("acme"), max_retries=0)
    listed = {model.id: (model.model_extra or {}).get("embeddings", False) for model in client.models.list()}
    assert listed["embed-small"] is True and listed["gpt-test"] is False
    assert (client.models.retrieve("demo-embed").model_extra or {})["embeddings"] is True
