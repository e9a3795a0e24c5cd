"""A real OpenAI-compatible embeddings server over TCP, for tests and benchmarks.

Nothing in-process is mocked: the worker's OpenAI SDK talks HTTP to this server on
127.0.0.1. Vectors are ``local_embed(text)`` so tests can compute expected results.

Runtime control (``POST /_control`` JSON, or :meth:`OpenAIServer.configure`):
``latency_ms``, ``tpm_limit``, ``rpm_limit``, ``window_s`` (the "minute", shrinkable for
fast tests), ``timeout_sleep_s``, ``faults`` (list appended to the fault queue; each entry
applies to one request: ``{"status": 429, "retry_after": 0.2}``, ``{"status": 500}``,
``{"timeout": true}``, ``{"malformed": true}``, ``{"wrong_count": true}``,
``{"wrong_dim": true}``), ``reset_stats``. ``GET /_stats`` returns every request.

In-process: ``with OpenAIServer(latency_ms=5) as srv: srv.base_url`` (own thread + loop).
Subprocess: ``python -m tests.support.openai_server --port P --latency-ms L --tpm T``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import json
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from typing import Any

from aiohttp import web

from worker.embedding.local import local_embed


def count_tokens(text: str) -> int:
    """Cheap stand-in for cl100k; tests pass the same numbers to the batcher."""
    return len(text) // 4 + 1


_PARALLEL_MIN_INPUTS = 32  # below this per process, the round trip costs more than it saves


def format_duration(seconds: float) -> str:
    """OpenAI style: "20ms", "1s", "6m0s", "1h2m3s"."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    whole = round(seconds, 3)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    out = f"{int(hours)}h" if hours else ""
    if hours or minutes:
        out += f"{int(minutes)}m"
    return out + f"{secs:g}s"


class _State:
    def __init__(self, **cfg: Any) -> None:
        self.lock = threading.Lock()
        self.latency_ms: float = 0.0
        self.tpm_limit: int | None = None
        self.rpm_limit: int | None = None
        self.window_s: float = 60.0
        self.tokenizer: str = "approx"  # "approx" (len/4+1) or "cl100k" (what OpenAI bills)
        self.timeout_sleep_s: float = 5.0
        self.faults: deque[dict[str, Any]] = deque()
        self.procs: int = 0
        self.pool: concurrent.futures.ProcessPoolExecutor | None = None
        self.requests: list[dict[str, Any]] = []
        self.window: deque[tuple[float, int]] = deque()  # accepted (time, tokens)
        self.apply(cfg)

    def apply(self, cfg: dict[str, Any]) -> None:
        with self.lock:
            for key in (
                "latency_ms",
                "tpm_limit",
                "rpm_limit",
                "window_s",
                "timeout_sleep_s",
                "tokenizer",
            ):
                if key in cfg:
                    setattr(self, key, cfg[key])
            self.faults.extend(cfg.get("faults") or [])
            if cfg.get("reset_stats"):
                self.requests.clear()
                self.window.clear()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            reqs = [dict(r) for r in self.requests]
        return {
            "requests": reqs,
            "count": len(reqs),
            "inputs": sum(r["inputs"] for r in reqs if r["status"] == 200),
            "tokens": sum(r["tokens"] for r in reqs if r["status"] == 200),
            "statuses": {
                str(s): sum(1 for r in reqs if r["status"] == s)
                for s in {r["status"] for r in reqs}
            },
        }


def _limit_headers(state: _State, now: float) -> dict[str, str]:
    """x-ratelimit-* as OpenAI sends them (must hold state.lock)."""
    used_t = sum(t for _, t in state.window)
    used_r = len(state.window)
    reset = (state.window[-1][0] + state.window_s - now) if state.window else 0.0
    headers: dict[str, str] = {}
    if state.rpm_limit:
        headers["x-ratelimit-limit-requests"] = str(state.rpm_limit)
        headers["x-ratelimit-remaining-requests"] = str(max(0, state.rpm_limit - used_r))
        headers["x-ratelimit-reset-requests"] = format_duration(max(0.0, reset))
    if state.tpm_limit:
        headers["x-ratelimit-limit-tokens"] = str(state.tpm_limit)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, state.tpm_limit - used_t))
        headers["x-ratelimit-reset-tokens"] = format_duration(max(0.0, reset))
    return headers


def _error(
    status: int, message: str, type_: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": None}}
    return web.json_response(body, status=status, headers=headers)


def _b64_drop_last_float(emb: str) -> str:
    return base64.b64encode(base64.b64decode(emb)[:-4]).decode()


def _embed_part(
    inputs: list[str], first: int, dim: int, fmt: str, tokenizer: str
) -> tuple[int, str]:
    """Tokens of some inputs, and their ``data`` entries as a JSON fragment (indices from
    ``first``). Serialized here so that helper processes share that work too; a top-level
    function, so a helper process can run it."""
    if tokenizer == "cl100k":
        from worker.text.tokens import count_tokens as cl100k

        tokens = sum(cl100k(t) for t in inputs)
    else:
        tokens = sum(count_tokens(t) for t in inputs)
    vectors = local_embed(inputs, dim)
    embs: list[Any] = (
        [base64.b64encode(vec.astype("<f4").tobytes()).decode() for vec in vectors]
        if fmt == "base64"
        else vectors.tolist()
    )
    entries = [
        {"object": "embedding", "index": first + i, "embedding": emb} for i, emb in enumerate(embs)
    ]
    return tokens, json.dumps(entries)[1:-1]


async def _compute(state: _State, inputs: list[str], dim: int, fmt: str) -> tuple[int, str]:
    """A request's tokens and ``data`` entries (a JSON fragment): inline, or split over
    the helper processes.

    Why helpers: the real API computes on its own machines. This stand-in shares the
    benchmark's two cores with the worker and PostgreSQL, and its CPU (cl100k counts, hashed
    features, JSON: ~0.25 s for 831 inputs) would otherwise be charged to a "zero-latency"
    embedder. Threads do not help: tiktoken scales poorly across threads of one process.
    """
    pool = state.pool
    if pool is None or len(inputs) < 2 * _PARALLEL_MIN_INPUTS:
        return _embed_part(inputs, 0, dim, fmt, state.tokenizer)
    loop = asyncio.get_running_loop()
    parts, first = _split_by_chars(inputs, state.procs), 0
    runs = []
    for part in parts:
        runs.append(loop.run_in_executor(pool, _embed_part, part, first, dim, fmt, state.tokenizer))
        first += len(part)
    done = await asyncio.gather(*runs)
    return sum(t for t, _ in done), ", ".join(frag for _, frag in done)


def _split_by_chars(inputs: list[str], n: int) -> list[list[str]]:
    """Consecutive runs of about equal characters (the work is per character)."""
    total = sum(len(t) for t in inputs)
    parts: list[list[str]] = [[]]
    acc = 0
    for text in inputs:
        if acc >= total * len(parts) / n and len(parts) < n:
            parts.append([])
        parts[-1].append(text)
        acc += len(text)
    return [p for p in parts if p]


def _helper_init(parent: int) -> None:
    """Exit when the server is gone: a pool's helpers hold both ends of its task queue,
    so a server killed without ``stop()`` would leave them waiting forever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _warm_helper(tokenizer: str) -> None:
    _embed_part(["warm up"], 0, 8, "float", tokenizer)
    time.sleep(0.2)  # held, so each warm-up task starts a helper of its own


async def _embeddings(request: web.Request) -> web.StreamResponse:
    state: _State = request.app[STATE]
    received = time.monotonic()
    if not request.headers.get("Authorization", "").startswith("Bearer "):
        return _error(401, "missing API key", "invalid_request_error")
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "invalid JSON", "invalid_request_error")
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    record: dict[str, Any] = {
        "t": received,
        "keys": sorted(body),
        "model": body.get("model"),
        "encoding_format": body.get("encoding_format"),
        "dimensions": body.get("dimensions"),
        "inputs": len(inputs) if isinstance(inputs, list) else 0,
        "tokens": 0,
        "status": 200,
        "fault": None,
    }
    if (
        not isinstance(inputs, list)
        or not inputs
        or not all(isinstance(t, str) and t for t in inputs)
    ):
        record["status"] = 400
        with state.lock:
            state.requests.append(record)
        return _error(
            400, "'input' must be a non-empty array of non-empty strings", "invalid_request_error"
        )
    fmt = body.get("encoding_format") or "float"
    dim = int(body.get("dimensions") or 1536)
    # Computed before the limits are checked: a 429 must know the request's tokens, and
    # the vectors computed for a refused request are simply dropped.
    tokens, data = await _compute(state, inputs, dim, fmt)  # data: JSON of the entries
    record["tokens"] = tokens

    with state.lock:
        fault = state.faults.popleft() if state.faults else None
        record["fault"] = fault
        now = time.monotonic()
        while state.window and state.window[0][0] <= now - state.window_s:
            state.window.popleft()
        over: str | None = None
        retry_after = 0.0
        if fault is None and state.rpm_limit and len(state.window) + 1 > state.rpm_limit:
            over = "requests"
            retry_after = state.window[0][0] + state.window_s - now
        if fault is None and state.tpm_limit and over is None:
            used = sum(t for _, t in state.window)
            if used + tokens > state.tpm_limit:
                over = "tokens"
                # Time until enough old tokens leave the window.
                free, retry_after = state.tpm_limit - used, state.window_s
                for t0, n in state.window:
                    free += n
                    if free >= tokens:
                        retry_after = t0 + state.window_s - now
                        break
        if over is None and (fault is None or "status" not in fault):
            state.window.append((now, tokens))
        headers = _limit_headers(state, now)
        latency = state.latency_ms / 1000.0
        timeout_sleep = state.timeout_sleep_s
        state.requests.append(record)

    if over is not None:
        record["status"] = 429
        retry_after = max(retry_after, 0.001)
        headers["retry-after"] = f"{retry_after:.3f}"
        headers["retry-after-ms"] = str(int(retry_after * 1000))
        return _error(429, f"Rate limit reached for {over}", over, headers)
    slept_ms = latency * 1000
    if latency:
        await asyncio.sleep(latency)
    if fault is not None:
        if fault.get("timeout"):
            record["status"] = 0
            hang = float(fault.get("sleep_s", timeout_sleep))
            slept_ms += hang * 1000
            await asyncio.sleep(hang)
        elif "status" in fault:
            status = int(fault["status"])
            record["status"] = status
            if "retry_after" in fault:
                headers["retry-after"] = f"{float(fault['retry_after']):g}"
                headers["retry-after-ms"] = str(int(float(fault["retry_after"]) * 1000))
            return _error(status, f"injected HTTP {status}", "server_error", headers)
        elif fault.get("malformed"):
            return web.Response(
                body=b'{"object": "list", "data": [{"obj',
                content_type="application/json",
                headers=headers,
            )

    if fault is not None and (fault.get("wrong_dim") or fault.get("wrong_count")):
        entries = json.loads(f"[{data}]")
        if fault.get("wrong_dim"):  # one float (4 bytes) short in every row, either encoding
            for e in entries:
                emb = e["embedding"]
                e["embedding"] = emb[:-1] if isinstance(emb, list) else _b64_drop_last_float(emb)
        if fault.get("wrong_count"):
            entries = entries[:-1] if len(entries) > 1 else entries * 2
        data = json.dumps(entries)[1:-1]
    # The entries are JSON already (computed, perhaps in helpers): spliced in, not re-encoded.
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    out = (
        f'{{"object": "list", "data": [{data}], "model": {json.dumps(body.get("model"))}, '
        f'"usage": {json.dumps(usage)}}}'
    ).encode()
    record["compute_ms"] = round((time.monotonic() - received) * 1000 - slept_ms, 1)
    return web.Response(body=out, content_type="application/json", headers=headers)


async def _control(request: web.Request) -> web.Response:
    cfg = await request.json()
    request.app[STATE].apply(cfg)
    return web.json_response({"ok": True})


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats())


STATE = web.AppKey("state", _State)


def make_app(state: _State) -> web.Application:
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app[STATE] = state
    app.router.add_post("/v1/embeddings", _embeddings)
    app.router.add_post("/embeddings", _embeddings)
    app.router.add_post("/_control", _control)
    app.router.add_get("/_stats", _stats)
    return app


class OpenAIServer:
    """Serve on 127.0.0.1 from a background thread; usable as a context manager."""

    def __init__(self, *, port: int = 0, procs: int = 0, **cfg: Any) -> None:
        self.state = _State(**cfg)
        self.state.procs = procs  # > 1: compute big requests in that many helper processes
        self._port = port
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configure(self, **cfg: Any) -> None:
        self.state.apply(cfg)

    def push_faults(self, *faults: dict[str, Any]) -> None:
        self.state.apply({"faults": list(faults)})

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    def reset(self) -> None:
        with self.state.lock:
            self.state.faults.clear()
        self.state.apply({"reset_stats": True})

    def start(self) -> OpenAIServer:
        if self.state.procs > 1:
            pool = concurrent.futures.ProcessPoolExecutor(
                self.state.procs,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_helper_init,
                initargs=(os.getpid(),),
            )
            # Start (and warm) every helper now, not during the first request.
            warm = [
                pool.submit(_warm_helper, self.state.tokenizer) for _ in range(self.state.procs)
            ]
            for f in warm:
                f.result()
            self.state.pool = pool
        self._thread = threading.Thread(target=self._run, name="openai-test-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test OpenAI server did not start")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(make_app(self.state), shutdown_timeout=0.5, access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", self._port)
        loop.run_until_complete(site.start())
        server = getattr(site, "_server", None)
        self.port = server.sockets[0].getsockname()[1] if server and server.sockets else self._port
        self._runner = runner
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None
        if self.state.pool is not None:
            self.state.pool.shutdown(cancel_futures=True)
            self.state.pool = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--tpm", type=int, default=None)
    parser.add_argument("--rpm", type=int, default=None)
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument(
        "--tokenizer",
        choices=("approx", "cl100k"),
        default="approx",
        help="how requests are counted against --tpm (cl100k = as OpenAI)",
    )
    parser.add_argument(
        "--procs",
        type=int,
        default=0,
        help="compute big requests in this many helper processes (0: inline)",
    )
    args = parser.parse_args(argv)
    if args.tokenizer == "cl100k":
        # Load the BPE ranks now: a cold tokenizer (~0.5 s) would slow the first requests,
        # which the real API never does.
        from worker.text.tokens import count_tokens

        count_tokens("warm up")
    srv = OpenAIServer(
        port=args.port,
        latency_ms=args.latency_ms,
        tpm_limit=args.tpm,
        rpm_limit=args.rpm,
        window_s=args.window_s,
        tokenizer=args.tokenizer,
        procs=args.procs,
    ).start()
    print(f"listening on {srv.base_url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # terminate(): stop the helpers too
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
