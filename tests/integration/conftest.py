from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.harness import make_settings
from tests.support.openai_server import OpenAIServer
from worker.core.settings import Settings


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


@pytest.fixture
def settings_factory(
    migrated_dsn: str, redis_server: Any, fake_openai: OpenAIServer
) -> Callable[..., Settings]:
    """Settings for this test's servers (a queue of its own); keyword overrides win."""

    def make(database_url: str | None = None, **overrides: Any) -> Settings:
        return make_settings(
            database_url or migrated_dsn, redis_server.url, fake_openai.base_url, **overrides
        )

    return make
