"""Structured logging: JSON lines when not on a TTY, readable console output on one.

Operators watch these logs, so every line is an event name plus fields (job_id,
workspace_id, kind, item, durations, counts). Message bodies and secrets never reach
them: the pipeline only logs identifiers and numbers, and ``redact`` masks any field
whose name looks secret, as a second line of defence.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from worker.core.settings import Settings

SECRET_WORDS = ("api_key", "token", "secret", "password", "authorization", "body", "content")
_SAFE = {"tokens", "embedded_tokens", "fresh_tokens", "token_count", "text_chars"}


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name, value in list(event.items()):
        if name in _SAFE or value is None or isinstance(value, (int, float, bool)):
            continue
        if any(word in name.lower() for word in SECRET_WORDS):
            event[name] = "[redacted]"
    return event


class HideJobArguments(logging.Filter):
    """arq logs every job's arguments when it starts it (``→ id:ingest({...})``): for us
    the payload, whose first 80 characters may be a message body. Keep the job reference
    and drop the arguments."""

    START_LINE = "%6.2fs → %s(%s)%s"

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.msg == self.START_LINE and isinstance(args, tuple) and len(args) == 4:
            record.args = (args[0], args[1], "…", args[3])
        return True


#: Libraries whose INFO lines are per request (noise, and URLs) rather than news.
QUIET_LIBRARY_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2", "openai")


def configure_logging(settings: Settings, *, stream: Any = None) -> None:
    """Configure structlog and the stdlib root logger once per process."""
    stream = stream or sys.stderr
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=getattr(stream, "isatty", lambda: False)())
    )
    level = logging.getLevelName(settings.log_level.upper())
    level = level if isinstance(level, int) else logging.INFO
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, redact, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries (arq, asyncpg, the embedded servers) log through the stdlib: render their
    # records with the same processors so operators get one JSON stream, not two formats.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, redact],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # The SDK's HTTP client logs every request line at INFO; keep them out of operator
    # logs. openai 1.x/2.x use httpx, 3.x its fork httpx2 (and httpcore/httpcore2 below).
    for name in QUIET_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    arq_worker = logging.getLogger("arq.worker")
    if not any(isinstance(f, HideJobArguments) for f in arq_worker.filters):
        arq_worker.addFilter(HideJobArguments())
