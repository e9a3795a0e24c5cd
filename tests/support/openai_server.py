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
import json
import threading
import time
from collections import deque
from typing import Any

from aiohttp import web

from worker.embedding.local import local_embed


def count_tokens(text: str) -> int:
    """Cheap stand-in for cl100k; tests pass the same numbers to the batcher."""
    return len(text) // 4 + 1


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
    if state.tokenizer == "cl100k":
        from worker.tokens import count_tokens as cl100k

        tokens = sum(cl100k(t) for t in inputs)
    else:
        tokens = sum(count_tokens(t) for t in inputs)
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
    if latency:
        await asyncio.sleep(latency)
    if fault is not None:
        if fault.get("timeout"):
            record["status"] = 0
            await asyncio.sleep(float(fault.get("sleep_s", timeout_sleep)))
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

    dim = int(body.get("dimensions") or 1536)
    vectors = local_embed(inputs, dim)
    if fault is not None and fault.get("wrong_dim"):
        vectors = vectors[:, : dim - 1]
    if fault is not None and fault.get("wrong_count"):
        vectors = vectors[:-1] if len(vectors) > 1 else vectors.repeat(2, axis=0)
    fmt = body.get("encoding_format") or "float"
    data = []
    for i, vec in enumerate(vectors):
        emb: Any = (
            base64.b64encode(vec.astype("<f4").tobytes()).decode()
            if fmt == "base64"
            else vec.tolist()
        )
        data.append({"object": "embedding", "index": i, "embedding": emb})
    payload = {
        "object": "list",
        "data": data,
        "model": body.get("model"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return web.Response(
        body=json.dumps(payload).encode(), content_type="application/json", headers=headers
    )


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

    def __init__(self, *, port: int = 0, **cfg: Any) -> None:
        self.state = _State(**cfg)
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
    args = parser.parse_args(argv)
    if args.tokenizer == "cl100k":
        # Load the BPE ranks now: a cold tokenizer (~0.5 s) would slow the first requests,
        # which the real API never does.
        from worker.tokens import count_tokens

        count_tokens("warm up")
    srv = OpenAIServer(
        port=args.port,
        latency_ms=args.latency_ms,
        tpm_limit=args.tpm,
        rpm_limit=args.rpm,
        window_s=args.window_s,
        tokenizer=args.tokenizer,
    ).start()
    print(f"listening on {srv.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
