from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.openai_server import OpenAIServer


@pytest.fixture(scope="session")
def openai_server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


@pytest.fixture
def fake_openai(openai_server: OpenAIServer) -> Iterator[OpenAIServer]:
    """The session's embeddings server with clean stats, faults and limits."""
    openai_server.reset()
    openai_server.configure(latency_ms=0, tpm_limit=None, rpm_limit=None)
    yield openai_server
    openai_server.reset()
