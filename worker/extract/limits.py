"""The caps every parse works within (docs/configuration.md, the README's payload section).

One frozen value, built from ``Settings`` by the parsing runner and passed into the child
process: the parsers read their limits from here and nowhere else. Time and memory are
enforced from outside (the runner kills a parse that overruns), the rest inside.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    #: Bytes of one document (an attachment or a fetched file); larger: skipped, unread.
    max_document_bytes: int = 25 * MIB
    #: PDF pages / PPTX slides / XLSX sheets read; the rest is left out (status partial).
    max_pages: int = 1_000
    #: Characters extracted from one document; the rest is left out (status partial).
    max_chars: int = 2_000_000
    #: Uncompressed bytes read from the members of one OOXML (zip) file.
    max_unzipped_bytes: int = 100 * MIB
    #: A zip member expanding more than this many times its compressed size (and past
    #: 1 MiB) is a zip bomb: the document is skipped.
    max_zip_ratio: int = 100
    #: Raw bytes of one MIME message.
    max_email_bytes: int = 40 * MIB
    #: MIME nesting depth followed; deeper parts are left out (warning).
    max_mime_depth: int = 20
    #: MIME parts looked at in one message; the rest are left out (warning).
    max_mime_parts: int = 500
    #: Attachments kept from one message; the rest are left out (warning).
    max_attachments: int = 100
