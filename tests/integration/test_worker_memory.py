"""What a worker holds (issue 21, item 5): no SDK imported for one POST, and an embeddings
answer decoded as it arrives, never held whole. Real servers: PostgreSQL, Redis and the
OpenAI-compatible test server (``bench/NOTES.md``, "A worker within 200 MB")."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import subprocess
import sys
import tracemalloc
import weakref
from collections.abc import Callable

import numpy as np

from tests.support.harness import new_workspace
from tests.support.openai_server import OpenAIServer
from worker.core.settings import Settings
from worker.db.pool import create_pool
from worker.embedding import EmbeddingBatcher
from worker.embedding.local import local_embed
from worker.embedding.providers import OpenAIProvider, make_provider
from worker.ingest.embed import RECENT_VECTORS, ItemEmbedder
from worker.ingest.flow import Flow
from worker.text.chunking import Chunk
from worker.text.tokens import count_tokens

#: Modules a started worker must not load: the OpenAI SDK (~20 MB resident, 680
#: modules) and the HTTP stacks that only it brings (the worker's client is ``httpx``);
#: the parsers, which run in the parsing children only (~7 MB with pypdfium2).
NOT_IMPORTED = (
    "openai",
    "httpx2",
    "httpcore2",
    "aiohttp",
    "pypdfium2",
    "worker.extract.mime",
    "worker.extract.documents",
)

_STARTED_WORKER = """
import asyncio, json, sys
from worker.core.settings import Settings
from worker.queue.runtime import Runtime
from worker.text.tokens import count_tokens

async def main() -> None:
    runtime = await Runtime.open(Settings(**json.loads(sys.argv[1])))
    try:
        texts = ["a first request", "and its neighbour"]
        vectors = await runtime.batcher.embed(texts, [count_tokens(t) for t in texts])
        assert vectors.shape == (2, 1536)
    finally:
        await runtime.close()
    print(json.dumps(sorted(sys.modules)))

asyncio.run(main())
"""


def test_a_started_worker_does_not_import_the_sdk(
    settings_factory: Callable[..., Settings],
) -> None:
    """A fresh interpreter opens the worker's runtime (pool, tokenizer, batcher, the
    embeddings client) and makes a request: none of ``NOT_IMPORTED`` is loaded."""
    s = settings_factory(embedding_provider="openai")
    values = s.model_dump(mode="json")
    values["openai_api_key"] = s.openai_api_key.get_secret_value() if s.openai_api_key else None
    out = subprocess.run(
        [sys.executable, "-c", _STARTED_WORKER, json.dumps(values)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "worker" in loaded and "httpx" in loaded
    assert not loaded & set(NOT_IMPORTED), sorted(loaded & set(NOT_IMPORTED))


def test_an_answer_is_decoded_as_it_arrives() -> None:
    """1,000 rows of 1,536 floats: 6.1 MB of vectors, an 8.2 MB base64 answer. Decoding
    it may hold the vectors and a piece of the answer (``DECODE_PIECE_BYTES``), not the
    answer whole (read whole and parsed it was the vectors plus twice the answer). The
    server runs in a process of its own: its allocations are not this one's."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.openai_server", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().split()[-1]
        texts = [f"row {i}: a sentence of moderate length" for i in range(1000)]
        peak, vectors = asyncio.run(_traced_embed(base_url + "/v1", texts))
    finally:
        proc.terminate()
        proc.wait(10)
    np.testing.assert_array_equal(vectors, local_embed(texts))
    vector_bytes = len(texts) * 1536 * 4
    assert peak < vector_bytes + vector_bytes // 3, (peak, vector_bytes)


async def _traced_embed(base_url: str, texts: list[str]) -> tuple[int, np.ndarray]:
    provider = OpenAIProvider(Settings(openai_api_key="sk-test", openai_base_url=base_url))
    try:
        await provider.embed(texts[:300])  # connection and lazy imports out of the way
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            result = await provider.embed(texts)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    finally:
        await provider.aclose()
    return peak, result.vectors


async def test_recent_vectors_are_bounded_while_an_item_waits(
    settings_factory: Callable[..., Settings], fake_openai: OpenAIServer
) -> None:
    """The vectors kept for items arriving with the same texts (``RECENT_VECTORS``) stay
    bounded, and never keep a finished item's array alive, while an older item still
    waits for its request (as every admitted item waits for tokens under a tight budget):
    eviction stopped at the oldest entry still pending, and the entries kept were views
    of whole arrays (38 MB of a 10M-TPM backfill's peak). Nor does the batcher's
    dispatcher keep the last request's arrays while it waits for more rows."""
    settings = settings_factory(embed_request_timeout_s=60.0, embed_batch_linger_ms=0)
    ws = await new_workspace(settings.database_url)
    pool = await create_pool(settings, settings.database_url, max_size=2)
    batcher = EmbeddingBatcher(make_provider(settings), settings)
    embedder = ItemEmbedder(pool, batcher, settings.embedding_model, 1536)
    try:
        fake_openai.push_faults({"timeout": True, "sleep_s": 5.0})  # its answer comes late
        stuck = asyncio.create_task(
            embedder.chunks("media", ws, _chunks("stuck", 1), Flow(batcher.expect))
        )
        for _ in range(500):  # its request reaches the server
            if fake_openai.stats()["count"]:
                break
            await asyncio.sleep(0.01)
        gc.collect()
        tracemalloc.start()
        try:
            freed = []
            for item in range(3):
                vectors, _ = await embedder.chunks(
                    "media", ws, _chunks(f"item {item}", RECENT_VECTORS), Flow(batcher.expect)
                )
                freed.append(weakref.ref(vectors))
                del vectors
            await asyncio.sleep(0)  # (the loop's last callbacks hold the last answer)
            gc.collect()
            # what the embedder and the batcher hold (the server runs in this process)
            mine = [tracemalloc.Filter(True, f"*/worker/{p}") for p in _CLIENT_SIDE]
            held = sum(
                s.size
                for s in tracemalloc.take_snapshot().filter_traces(mine).statistics("filename")
            )
        finally:
            tracemalloc.stop()
        assert not stuck.done()  # (else eviction was never stopped by it)
        assert [ref() is None for ref in freed] == [True, True, True]
        row = 1536 * 4
        assert held < RECENT_VECTORS * row * 1.25, held  # 3x as many rows were embedded
        inputs = fake_openai.stats()["inputs"]
        again, fresh = await embedder.chunks(
            "media", ws, _chunks("item 2", 8), Flow(batcher.expect)
        )
        assert fresh == [] and fake_openai.stats()["inputs"] == inputs  # reused, not sent
        np.testing.assert_array_equal(again, local_embed([c.text for c in _chunks("item 2", 8)]))
        await stuck
    finally:
        await embedder.aclose()
        await batcher.aclose()
        await pool.close()


_CLIENT_SIDE = (
    "ingest/*",
    "embedding/batcher.py",
    "embedding/packing.py",
    "embedding/providers.py",
)


def _chunks(prefix: str, n: int) -> list[Chunk]:
    texts = [f"{prefix}, chunk {i}: a sentence of moderate length" for i in range(n)]
    return [
        Chunk(i, t, count_tokens(t), hashlib.sha256(t.encode()).hexdigest())
        for i, t in enumerate(texts)
    ]
