"""Parsing off the event loop: MIME messages, documents and large HTML bodies run in child
processes, each parse under a hard timeout and the child under a memory limit.

Why processes: parsing hostile input is where a worker hangs or balloons (a PDF whose
parser loops, a zip bomb in a DOCX, 20 MB of nested tags). A thread cannot be stopped and
shares the worker's heap; a child process is killed at the deadline and its address space
is capped (``RLIMIT_AS``), so a runaway parse fails *there* with ``MemoryError`` and the
worker, its other items and its event loop are untouched.

Why pebble: ``concurrent.futures.ProcessPoolExecutor`` has no per-task timeout and breaks
the whole pool when a child dies; pebble's ``ProcessPool`` kills just the overrunning
task's process, starts a fresh one, and reports a dead child as ``ProcessExpired`` on that
task's future only. Children come from a ``forkserver`` (a clean process started once):
they inherit neither the worker's memory nor its threads and event loop, and are recycled
every :data:`TASKS_PER_CHILD` parses so a leak in a parser library cannot accumulate.

The parsers themselves (``worker.extract``) are pure and never raise on bad input; what
this module adds is the outcome of a parse that did not return: killed at the timeout,
out of memory, or a crashed child.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import resource
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

import pebble

from worker.core.settings import Settings
from worker.extract.limits import Limits
from worker.extract.results import Document, ParsedEmail
from worker.text.html import html_to_text

T = TypeVar("T")
TASKS_PER_CHILD = 200
#: Imported once by the forkserver, so a fresh child starts parsing at once.
#: (A child unpickles its task's function by module: ``worker.ingest.parsing`` itself must be
#: preloaded too, or each new child imports the worker's whole import graph, ~1 s.)
_PRELOAD = [
    "worker.ingest.parsing",
    "worker.extract.documents",
    "worker.extract.mime",
    "worker.text.html",
]


class ParseError(Exception):
    """A parse that did not return (timeout, memory, crash). Not transient: the same
    input would do the same again. ``field`` names the payload field it came from."""

    def __init__(self, reason: str, *, field: str = "content") -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.reason, self.field))


def _rebuild(reason: str, field: str) -> ParseError:
    return ParseError(reason, field=field)


def limits_from(settings: Settings) -> Limits:
    """The parsers' caps, from the one settings class."""
    return Limits(
        max_document_bytes=settings.document_max_bytes,
        max_pages=settings.document_max_pages,
        max_chars=settings.document_max_chars,
        max_unzipped_bytes=settings.document_max_unzipped_bytes,
        max_email_bytes=settings.email_max_bytes,
        max_mime_depth=settings.mime_max_depth,
        max_mime_parts=settings.mime_max_parts,
        max_attachments=settings.email_max_attachments,
    )


def _limit_memory(megabytes: int) -> None:  # runs in each child, before any task
    limit = megabytes * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _html_text(body: str) -> str:  # a module-level function: it is pickled by name
    return html_to_text(body)


# The parsers run in the children only: the worker process never imports them (MIME,
# the document formats, pypdfium2: ~10 MB resident in every worker). The forkserver
# has (``_PRELOAD``), so in a child these imports are a lookup.
def _parse_email(raw: bytes, limits: Limits) -> ParsedEmail:
    from worker.extract.mime import parse_email

    return parse_email(raw, limits)


def _extract_document(data: bytes, limits: Limits) -> Document:
    from worker.extract.documents import extract_document

    return extract_document(data, limits)


#: Arguments longer than this (bytes, or characters of text) go to the child through a
#: temporary file, not the pipe.
SPILL_BYTES = 1 << 20
_SLICE_CHARS = 1 << 20


@dataclass(frozen=True)
class _Spilled:
    """A large argument, written to ``path`` for the child to read.

    Why: pebble sends a task's arguments pickled through a pipe, and a 20 MB body became
    three more copies of itself in the worker at once (the pickle, its buffer, the
    framed message: ~58 MB, measured with memray) while the worker also held the
    payload. Written in slices, a body costs the worker one slice; the child, whose
    memory is its own and capped, reads it whole."""

    path: str
    text: bool


def _spill(value: Any) -> Any:
    if isinstance(value, str) and len(value) > SPILL_BYTES:
        text = True
    elif isinstance(value, bytes | bytearray) and len(value) > SPILL_BYTES:
        text = False
    else:
        return value
    fd, path = tempfile.mkstemp(prefix="cos-worker-parse-")
    try:
        with os.fdopen(fd, "wb") as f:
            if text:
                for start in range(0, len(value), _SLICE_CHARS):
                    f.write(value[start : start + _SLICE_CHARS].encode("utf-8", "surrogatepass"))
            else:
                f.write(value)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return _Spilled(path, text)


def _unspill(value: Any) -> Any:
    if not isinstance(value, _Spilled):
        return value
    with open(value.path, "rb") as f:
        data = f.read()
    return data.decode("utf-8", "surrogatepass") if value.text else data


def _call(function: Callable[..., T], *args: Any) -> T:  # in the child
    return function(*(_unspill(a) for a in args))


class Parser:
    """The worker's parsing children: at most ``parse_workers`` parses run at once."""

    def __init__(self, settings: Settings, preload: Sequence[str] = ()) -> None:
        """``preload``: modules the process's ``__main__`` imports (a child re-runs it
        before its first task: preloaded in the forkserver, that costs ~0.05 s, not ~1 s)."""
        self.settings = settings
        self.preload = [*_PRELOAD, *preload]
        self.limits = limits_from(settings)
        self.timeout = settings.parse_timeout_s
        self._pool: pebble.ProcessPool | None = None
        self._slots = asyncio.Semaphore(settings.parse_workers)

    def _ensure_pool(self) -> pebble.ProcessPool:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(self.preload)
            self._pool = pebble.ProcessPool(
                max_workers=self.settings.parse_workers,
                max_tasks=TASKS_PER_CHILD,
                initializer=_limit_memory,
                initargs=(self.settings.parse_memory_mb,),
                context=context,
            )
        return self._pool

    async def _run(self, what: str, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a child; :class:`ParseError` if it does not return."""
        async with self._slots:  # queued here, not in the pool: the timeout is the parse's
            if self._pool is None:  # starting the forkserver blocks: not on the event loop
                await asyncio.to_thread(self._ensure_pool)
            sent = [_spill(a) for a in args]
            future = self._ensure_pool().schedule(
                _call, args=(function, *sent), timeout=self.timeout
            )
            try:
                return await asyncio.wrap_future(future)
            except FutureTimeout:
                raise ParseError(
                    f"{what} parse took longer than {self.timeout:g} s (PARSE_TIMEOUT_S); killed"
                ) from None
            except MemoryError:
                raise ParseError(
                    f"{what} parse needed more than {self.settings.parse_memory_mb} MiB "
                    "(PARSE_MEMORY_MB)"
                ) from None
            except pebble.ProcessExpired as exc:
                raise ParseError(f"{what} parser process died (exit code {exc.exitcode})") from None
            except BrokenProcessPool:
                # children that cannot even start: a fresh pool next time, this parse fails
                pool, self._pool = self._pool, None
                if pool is not None:
                    pool.stop()
                raise ParseError(f"{what} parser processes could not start") from None
            except asyncio.CancelledError:
                future.cancel()  # pebble stops the child running it
                raise
            finally:
                for a in sent:
                    if isinstance(a, _Spilled):
                        with contextlib.suppress(OSError):
                            os.unlink(a.path)

    async def email(self, raw: bytes) -> ParsedEmail:
        """A raw RFC 5322 message; :class:`ParseError` (field ``raw``) if it is killed."""
        try:
            return await self._run("message", _parse_email, raw, self.limits)
        except ParseError as exc:
            raise ParseError(exc.reason, field="raw") from None

    async def document(self, data: bytes) -> Document:
        """A document's text with positions; a parse that does not return is a skipped
        document (the reason says why), so one bad attachment never fails its message."""
        try:
            return await self._run("document", _extract_document, data, self.limits)
        except ParseError as exc:
            return Document(
                "other", "application/octet-stream", status="skipped", reason=exc.reason
            )

    async def html(self, body: str) -> str:
        """A large HTML body's text (small ones are converted inline by the caller)."""
        return await self._run("HTML", _html_text, body)

    async def aclose(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.stop()
            await asyncio.to_thread(pool.join, 10)
