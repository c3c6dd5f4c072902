"""The local upstreams both coding agents' tests run against, one of each per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.responses_server import FakeResponses


@pytest.fixture(scope="module")
def chat_fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def responses_fake() -> Iterator[FakeResponses]:
    server = FakeResponses().start()
    yield server
    server.stop()
