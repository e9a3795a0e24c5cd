"""Structured logging: JSON lines when not on a TTY, readable console output on one.

Operators watch these logs, so every line is an event name plus fields (job_id,
workspace_id, kind, item, durations, counts). Message bodies, secrets and personal data
never reach them: the pipeline only logs identifiers and numbers; ``redact`` masks any
field whose name looks secret; ``redact_job`` gives a job's lines the event store's value
shapes (``worker.core.redact``: an error's wording without what it quotes of the input,
field paths without unknown keys, a connector's own arq ids and external ids as digests);
``HideJobArguments`` does the same for arq's own lines.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from worker.core.priority import LIVE_SCORE_LEAD_MS
from worker.core.redact import digest, safe_arq_id, safe_field, safe_reason
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


#: Keys of a job's log lines that hold input whatever their shape: never logged.
_NEVER = frozenset({"subject", "filename", "url", "content_url", "address", "name", "title"})
_SHAPES = {
    "error": safe_reason,
    "reason": safe_reason,
    "message": safe_reason,
    "field": safe_field,
    "arq_job_id": safe_arq_id,
}


def redact_job(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A job's log line (it carries ``job_id``) holds no personal data: the same value
    shapes as its events (the ledger row keeps the detail, and erasure reaches it)."""
    if "job_id" not in event:
        return event
    for name in list(event):
        value = event[name]
        if name in _NEVER:
            del event[name]
        elif isinstance(value, str) and name in _SHAPES:
            event[name] = _SHAPES[name](value)
        elif name == "external_id" and isinstance(value, str):
            event[name] = digest(value)
    return event


class HideJobArguments(logging.Filter):
    """arq logs every job's arguments when it starts it (``→ id:ingest({...})``): for us
    the payload, whose first 80 characters may be a message body. Keep the job reference
    and drop the arguments; a job id a connector chose (a Message-ID, say) is logged as
    its digest, in every line arq writes about the job."""

    START_LINE = "%6.2fs → %s(%s)%s"

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.msg == self.START_LINE and isinstance(args, tuple) and len(args) == 4:
            args = (args[0], args[1], "…", _live_delay(str(args[3])))
        if isinstance(args, tuple):
            args = tuple(_job_ref(a) if isinstance(a, str) else a for a in args)
        record.args = args
        return True


_DELAYED = re.compile(r"delayed=(\d+(?:\.\d+)?)s")


def _live_delay(extra: str) -> str:
    """arq counts a job's delay from its score, which a live job has an hour early
    (``worker.core.priority``): say the real delay, and that the job was live."""

    def real(match: re.Match[str]) -> str:
        delayed = float(match.group(1)) - LIVE_SCORE_LEAD_MS / 1000
        return f"delayed={delayed:0.2f}s live" if delayed >= -1 else match.group(0)

    return _DELAYED.sub(real, extra)


def _job_ref(text: str) -> str:
    """arq's ``<job id>:<function>`` reference with the job id as ``safe_arq_id`` keeps it."""
    job, sep, function = text.rpartition(":")
    if not sep or not job or not function.isidentifier():
        return text
    return f"{safe_arq_id(job)}:{function}"


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
        processors=[*shared, redact, redact_job, structlog.processors.format_exc_info, renderer],
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
