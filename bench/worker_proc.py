"""One benchmark worker process: the real arq Worker with ``worker_options(settings)``.

``python -m bench.worker_proc SETTINGS_JSON READY_FILE STATS_FILE [POLL_DELAY]``

Writes READY_FILE once the runtime is open (pool, tokenizer, batcher), runs until
SIGTERM/SIGINT, then writes STATS_FILE: peak RSS (``ru_maxrss``/VmHWM), RSS once started
and when stopped, the embedding
batcher's counters, the event loop's lag (how late a 50 ms sleeper woke) and the garbage
collector's pauses per generation.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

from worker.client import redis_settings_for
from worker.core.settings import Settings
from worker.queue import app


def vm_hwm_kb() -> int:
    return _status_kb("VmHWM:") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def vm_rss_kb() -> int:
    return _status_kb("VmRSS:")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


LAG_TICK_S = 0.05


async def watch_loop_lag(samples: list[float]) -> None:
    """How late the event loop wakes a 50 ms sleeper: the time every callback waits for
    the ones ahead of it (a busy loop delays Redis and PostgreSQL replies alike)."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(LAG_TICK_S)
        samples.append(max(0.0, loop.time() - before - LAG_TICK_S))


def watch_gc(pauses: list[tuple[int, float, float]]) -> None:
    """Record every garbage collection: (generation, wall seconds, CPU seconds). A full
    collection of a bulk load's heap holds the loop; the wall time also counts waiting for
    a core, which the CPU time does not."""
    started: list[float] = []

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter(), time.thread_time()]
        elif started:
            pauses.append(
                (
                    int(info["generation"]),
                    time.perf_counter() - started[0],
                    time.thread_time() - started[1],
                )
            )

    gc.callbacks.append(callback)


def gc_summary(pauses: list[tuple[int, float, float]]) -> dict[str, Any]:
    """Per generation: collections, total and longest pause (ms, wall), total CPU (ms)."""
    out: dict[str, Any] = {}
    for gen in (0, 1, 2):
        mine = [(wall, cpu) for g, wall, cpu in pauses if g == gen]
        out[f"gen{gen}"] = {
            "count": len(mine),
            "total_ms": round(sum(w for w, _ in mine) * 1000, 1),
            "max_ms": round(max((w for w, _ in mine), default=0.0) * 1000, 1),
            "cpu_ms": round(sum(c for _, c in mine) * 1000, 1),
        }
    return out


def lag_summary(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)
    return {
        "max_ms": round(ordered[-1] * 1000, 1),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 1),
        "over_500ms": sum(1 for x in ordered if x > 0.5),
    }


async def main(settings_json: str, ready: str, stats: str, poll_delay: float) -> None:
    settings = Settings(**json.loads(settings_json))
    opts = app.worker_options(settings)
    started = opts["on_startup"]
    holder: dict[str, Any] = {}
    lags: list[float] = []
    gc_pauses: list[tuple[int, float, float]] = []

    async def on_startup(ctx: dict[str, Any]) -> None:
        await started(ctx)
        holder["runtime"] = ctx["runtime"]
        # From here on (start-up imports and the tokenizer load are not ingest time).
        holder["lag_watch"] = asyncio.create_task(watch_loop_lag(lags))
        watch_gc(gc_pauses)
        if os.environ.get("BENCH_SLOW_CALLBACK_MS"):  # name the callbacks that stall the loop
            loop = asyncio.get_running_loop()
            loop.slow_callback_duration = float(os.environ["BENCH_SLOW_CALLBACK_MS"]) / 1000
            loop.set_debug(True)
        holder["idle_rss_kb"] = vm_rss_kb()  # started: imports, tokenizer, pools, SDK
        Path(ready).write_text("ok")

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        rt = ctx.get("runtime")
        if rt is not None:
            holder["batcher"] = rt.batcher.stats.as_dict()
        await app.shutdown(ctx)

    opts.update(on_startup=on_startup, on_shutdown=on_shutdown)
    # As worker.main.WorkerSettings does (the deployable worker).
    opts.setdefault("poll_delay", getattr(settings, "worker_poll_delay_s", poll_delay))
    worker = app.worker_class(settings)(
        **opts,
        redis_settings=redis_settings_for(settings.redis_url or ""),
        ctx={"settings": settings},
        handle_signals=False,
    )
    # arq's own handler cancels ``worker.main_task``, which only ``Worker.run`` sets.
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await worker.main()
    except asyncio.CancelledError:
        pass
    finally:
        end_rss_kb = vm_rss_kb()  # before the runtime closes
        if "lag_watch" in holder:
            holder["lag_watch"].cancel()
        await worker.close()
        Path(stats).write_text(
            json.dumps(
                {
                    "vm_hwm_kb": vm_hwm_kb(),
                    "idle_rss_kb": holder.get("idle_rss_kb"),
                    "end_rss_kb": end_rss_kb,
                    "batcher": holder.get("batcher"),
                    "jobs_complete": worker.jobs_complete,
                    "jobs_failed": worker.jobs_failed,
                    "jobs_retried": worker.jobs_retried,
                    "loop_lag": lag_summary(lags),
                    "gc": gc_summary(gc_pauses),
                }
            )
        )


if __name__ == "__main__":
    asyncio.run(
        main(
            sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 0.5
        )
    )
