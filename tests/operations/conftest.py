"""Fixtures for the operations tests: a gateway with a WhatsApp app, a span recorder, metric scrapes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from runtime.config import Settings
from tests.fakes.graph_api import FakeGraphAPI
from tests.support import make_settings
from workers.whatsapp.payloads import SIGNATURE_HEADER, change, delivery, encode, sign, text_message

APP_SECRET = "ops-app-secret"
PHONE_NUMBER_ID = "106540352242922"
GRAPH_TOKEN = "EAAG-ops"
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def ops_settings(tmp_path: Path, upstream_url: str, graph_url: str, **overrides: Any) -> Settings:
    whatsapp = {
        "graph_api_base": graph_url,
        "poll_interval_s": 0.05,
        "apps": [
            {
                "id": "acme-support",
                "organisation": "acme",
                "phone_number_id": PHONE_NUMBER_ID,
                "access_token": GRAPH_TOKEN,
                "app_secret": APP_SECRET,
                "verify_token": "verify",
                "model": "gpt-test",
                "enabled_plugin_ids": ["calculator"],
            }
        ],
    }
    models = [
        {"id": "gpt-test", "provider": "upstream", "upstream_model": "gpt-4o-mini", "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        {"id": "gpt-other", "provider": "upstream"},
        {"id": "embed-small", "provider": "upstream", "upstream_model": "text-embedding-3-small", "embeddings": True, "price": {"input_per_mtok": 0.02}},
    ]
    return make_settings(tmp_path, upstream_url, **{"whatsapp": whatsapp, "models": models, **overrides})


@pytest.fixture
def graph() -> Iterator[FakeGraphAPI]:
    server = FakeGraphAPI(tokens={PHONE_NUMBER_ID: GRAPH_TOKEN}).start()
    yield server
    server.stop()


def post_whatsapp(base_url: str, text: str, sender: str = "15551234567") -> httpx.Response:
    body = encode(delivery(change(PHONE_NUMBER_ID, messages=[text_message(sender, text)])))
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(APP_SECRET, body)}
    return httpx.post(f"{base_url}/webhooks/whatsapp", content=body, headers=headers, timeout=10)


def scrape(base_url: str, token: str | None = None) -> Series:
    """Every sample of GET /metrics, by (sample name, labels)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{base_url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    series: Series = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            series[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return series


def value(series: Series, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (a counter never incremented)."""
    return series.get((name, frozenset(labels.items())), 0.0)


def matching(series: Series, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    wanted = set(labels.items())
    return {key: v for (sample, key), v in series.items() if sample == name and wanted <= key}


# -- spans ------------------------------------------------------------------------------------


class _Recorder(SimpleSpanProcessor):
    """Hands spans to the in-memory exporter only while a test records: the provider outlives the test."""

    recording = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.recording:
            super().on_end(span)


_exporter = InMemorySpanExporter()
_recorder = _Recorder(_exporter)
_providers_recorded: list[TracerProvider] = []


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The SDK's in-memory exporter on the process's tracer provider (installed once, as a host would)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if provider not in _providers_recorded:
        provider.add_span_processor(_recorder)
        _providers_recorded.append(provider)
    _exporter.clear()
    _recorder.recording = True
    try:
        yield _exporter
    finally:
        _recorder.recording = False
        _exporter.clear()
